//! Conditions on nodes (`when`): a small expression language over the run's parameters, the
//! states of upstream nodes and the MLflow metrics their attempts logged. Parsed and evaluated
//! here; nothing in it runs code.
//!
//! ```text
//! upstream.train.best.metrics.val_auc >= 0.9 and params.target == "prod"
//! max(upstream.train.metrics.accuracy) > 0.8 or upstream.eval.state == "failed"
//! upstream.train[0].metrics["val/loss"] < 0.2
//! ```
//!
//! Values are numbers, strings and booleans; `and`, `or`, `not`, comparisons, `+ - * /`, and
//! `min`, `max`, `mean`, `count` over the metric of every instance of a node. A parameter is a
//! string; compared with a number it is read as one.

use std::fmt;

/// What a path in an expression refers to.
#[derive(Debug, Clone, PartialEq)]
pub enum Ref {
    /// `params.<name>`
    Param(String),
    /// `upstream.<node>.state`: `succeeded`, `failed`, `skipped` or `cancelled`.
    State(String),
    /// `upstream.<node>.best.<field>`: what a `select` edge chose from `node`.
    Best { node: String, field: BestField },
    /// `upstream.<node>[<i>].metrics.<name>`: one instance's metric.
    InstanceMetric {
        node: String,
        instance: u32,
        metric: String,
    },
    /// `upstream.<node>.metrics.<name>`: the metric of every instance (aggregate it).
    Metrics { node: String, metric: String },
}

/// What may be read of the best upstream instance.
#[derive(Debug, Clone, PartialEq)]
pub enum BestField {
    RunId,
    ModelUri,
    Metric(String),
}

impl Ref {
    /// The upstream node it reads, if any.
    pub fn node(&self) -> Option<&str> {
        match self {
            Ref::Param(_) => None,
            Ref::State(n) | Ref::Best { node: n, .. } => Some(n),
            Ref::InstanceMetric { node, .. } | Ref::Metrics { node, .. } => Some(node),
        }
    }
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |m: &str| {
            if m.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                format!(".{m}")
            } else {
                format!("[{m:?}]")
            }
        };
        match self {
            Ref::Param(p) => write!(f, "params.{p}"),
            Ref::State(n) => write!(f, "upstream.{n}.state"),
            Ref::Best { node, field } => match field {
                BestField::RunId => write!(f, "upstream.{node}.best.run_id"),
                BestField::ModelUri => write!(f, "upstream.{node}.best.model_uri"),
                BestField::Metric(m) => write!(f, "upstream.{node}.best.metrics{}", name(m)),
            },
            Ref::InstanceMetric {
                node,
                instance,
                metric,
            } => {
                write!(f, "upstream.{node}[{instance}].metrics{}", name(metric))
            }
            Ref::Metrics { node, metric } => write!(f, "upstream.{node}.metrics{}", name(metric)),
        }
    }
}

/// An aggregate over a node's instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Min,
    Max,
    Mean,
    Count,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    And,
    Or,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
}

impl Op {
    fn text(self) -> &'static str {
        match self {
            Op::And => "and",
            Op::Or => "or",
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Add => "+",
            Op::Sub => "-",
            Op::Mul => "*",
            Op::Div => "/",
        }
    }
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Num(f64),
    Str(String),
    Bool(bool),
    Ref(Ref),
    Call(Func, Ref),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Bin(Op, Box<Expr>, Box<Expr>),
}

/// A value while evaluating.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Num(f64),
    Str(String),
    Bool(bool),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Num(n) => write!(f, "{n}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// An expression that cannot be parsed: where (a character offset) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at character {at}: {message}")]
pub struct ParseError {
    pub at: usize,
    pub message: String,
}

/// Most characters and nesting one condition may have (it is stored with every run).
const MAX_LEN: usize = 2_000;
const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Str(String),
    Ident(String),
    Sym(&'static str),
}

fn lex(text: &str) -> Result<Vec<(usize, Tok)>, ParseError> {
    let err = |at: usize, message: String| ParseError { at, message };
    if text.len() > MAX_LEN {
        return Err(err(
            MAX_LEN,
            format!("a condition has at most {MAX_LEN} characters"),
        ));
    }
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(|(_, d)| d.is_ascii_digit()))
        {
            let start = i;
            while i < chars.len()
                && (chars[i].1.is_ascii_alphanumeric()
                    || chars[i].1 == '.'
                    || ((chars[i].1 == '-' || chars[i].1 == '+')
                        && matches!(chars[i - 1].1, 'e' | 'E')))
            {
                i += 1;
            }
            let s: String = chars[start..i].iter().map(|(_, c)| c).collect();
            let n = s
                .parse::<f64>()
                .map_err(|_| err(at, format!("{s:?} is not a number")))?;
            out.push((at, Tok::Num(n)));
        } else if c == '"' || c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                let Some(&(_, d)) = chars.get(i) else {
                    return Err(err(at, "a string is not closed".into()));
                };
                i += 1;
                match d {
                    d if d == c => break,
                    '\\' => {
                        let Some(&(_, e)) = chars.get(i) else {
                            return Err(err(at, "a string is not closed".into()));
                        };
                        i += 1;
                        s.push(e);
                    }
                    d => s.push(d),
                }
            }
            out.push((at, Tok::Str(s)));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].1.is_alphanumeric() || chars[i].1 == '_' || chars[i].1 == '-')
            {
                i += 1;
            }
            out.push((
                at,
                Tok::Ident(chars[start..i].iter().map(|(_, c)| c).collect()),
            ));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())]
                .iter()
                .map(|(_, c)| c)
                .collect();
            let sym = ["==", "!=", "<=", ">="]
                .into_iter()
                .find(|s| two == *s)
                .or_else(|| {
                    ["<", ">", "(", ")", "[", "]", ".", "+", "-", "*", "/", ","]
                        .into_iter()
                        .find(|s| s.starts_with(c))
                });
            match sym {
                Some(s) => {
                    i += s.len();
                    out.push((at, Tok::Sym(s)));
                }
                None if c == '=' => return Err(err(at, "write == to compare".into())),
                None if c == '&' || c == '|' || c == '!' => {
                    return Err(err(at, "write and, or, not".into()))
                }
                None => return Err(err(at, format!("{c:?} is not part of a condition"))),
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    end: usize,
    depth: usize,
}

impl Parser {
    fn at(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end, |(a, _)| *a)
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }

    fn fail<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            at: self.at(),
            message: message.into(),
        })
    }

    fn eat_sym(&mut self, s: &str) -> bool {
        if self.peek()
            == Some(&Tok::Sym(match s {
                "(" => "(",
                ")" => ")",
                "[" => "[",
                "]" => "]",
                "." => ".",
                _ => return false,
            }))
        {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_word(&mut self, w: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Ident(i)) if i == w) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, s: &str) -> Result<(), ParseError> {
        if self.eat_sym(s) {
            Ok(())
        } else {
            self.fail(format!("expected {s:?} here"))
        }
    }

    fn nested<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, ParseError>,
    ) -> Result<T, ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.fail(format!("a condition nests at most {MAX_DEPTH} deep"));
        }
        let r = f(self);
        self.depth -= 1;
        r
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut l = self.and()?;
        while self.eat_word("or") {
            l = Expr::Bin(Op::Or, Box::new(l), Box::new(self.and()?));
        }
        Ok(l)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut l = self.not()?;
        while self.eat_word("and") {
            l = Expr::Bin(Op::And, Box::new(l), Box::new(self.not()?));
        }
        Ok(l)
    }

    fn not(&mut self) -> Result<Expr, ParseError> {
        if self.eat_word("not") {
            return self.nested(|p| Ok(Expr::Not(Box::new(p.not()?))));
        }
        self.cmp()
    }

    fn cmp(&mut self) -> Result<Expr, ParseError> {
        let l = self.sum()?;
        let op = match self.peek() {
            Some(Tok::Sym("==")) => Op::Eq,
            Some(Tok::Sym("!=")) => Op::Ne,
            Some(Tok::Sym("<")) => Op::Lt,
            Some(Tok::Sym("<=")) => Op::Le,
            Some(Tok::Sym(">")) => Op::Gt,
            Some(Tok::Sym(">=")) => Op::Ge,
            _ => return Ok(l),
        };
        self.pos += 1;
        let r = self.sum()?;
        if matches!(
            self.peek(),
            Some(Tok::Sym("==" | "!=" | "<" | "<=" | ">" | ">="))
        ) {
            return self.fail("comparisons do not chain; join them with and");
        }
        Ok(Expr::Bin(op, Box::new(l), Box::new(r)))
    }

    fn sum(&mut self) -> Result<Expr, ParseError> {
        let mut l = self.term()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Sym("+")) => Op::Add,
                Some(Tok::Sym("-")) => Op::Sub,
                _ => return Ok(l),
            };
            self.pos += 1;
            l = Expr::Bin(op, Box::new(l), Box::new(self.term()?));
        }
    }

    fn term(&mut self) -> Result<Expr, ParseError> {
        let mut l = self.unary()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Sym("*")) => Op::Mul,
                Some(Tok::Sym("/")) => Op::Div,
                _ => return Ok(l),
            };
            self.pos += 1;
            l = Expr::Bin(op, Box::new(l), Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.peek() == Some(&Tok::Sym("-")) {
            self.pos += 1;
            return self.nested(|p| Ok(Expr::Neg(Box::new(p.unary()?))));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Expr, ParseError> {
        let Some((_, tok)) = self.toks.get(self.pos).cloned() else {
            return self.fail("the condition ends too early");
        };
        match tok {
            Tok::Num(n) => {
                self.pos += 1;
                Ok(Expr::Num(n))
            }
            Tok::Str(s) => {
                self.pos += 1;
                Ok(Expr::Str(s))
            }
            Tok::Sym("(") => {
                self.pos += 1;
                let e = self.nested(|p| p.or())?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Ident(w) => {
                self.pos += 1;
                match w.as_str() {
                    "true" => Ok(Expr::Bool(true)),
                    "false" => Ok(Expr::Bool(false)),
                    "min" | "max" | "mean" | "count" if self.peek() == Some(&Tok::Sym("(")) => {
                        let f = match w.as_str() {
                            "min" => Func::Min,
                            "max" => Func::Max,
                            "mean" => Func::Mean,
                            _ => Func::Count,
                        };
                        self.pos += 1;
                        let at = self.at();
                        let r = self.path()?;
                        if !matches!(r, Ref::Metrics { .. }) {
                            return Err(ParseError { at, message: format!("{w}() takes the metric of every instance of a node: upstream.<node>.metrics.<name>") });
                        }
                        self.expect(")")?;
                        Ok(Expr::Call(f, r))
                    }
                    "params" | "upstream" => {
                        self.pos -= 1;
                        Ok(Expr::Ref(self.path()?))
                    }
                    other => {
                        self.pos -= 1;
                        self.fail(format!("{other:?} is not known here: a condition reads params.<name>, upstream.<node>…, numbers, \"strings\", true and false"))
                    }
                }
            }
            Tok::Sym(s) => self.fail(format!("{s:?} cannot start a value")),
        }
    }

    fn name(&mut self, what: &str) -> Result<String, ParseError> {
        match self.toks.get(self.pos).cloned() {
            Some((_, Tok::Ident(w))) => {
                self.pos += 1;
                Ok(w)
            }
            _ => self.fail(format!("expected {what} here")),
        }
    }

    /// A metric name: `.name` or `["any/name"]`.
    fn metric_name(&mut self) -> Result<String, ParseError> {
        if self.eat_sym("[") {
            let Some((_, Tok::Str(s))) = self.toks.get(self.pos).cloned() else {
                return self.fail("expected a metric name in quotes, as in [\"val/auc\"]");
            };
            self.pos += 1;
            self.expect("]")?;
            return Ok(s);
        }
        self.expect(".")?;
        self.name("a metric name")
    }

    fn path(&mut self) -> Result<Ref, ParseError> {
        let root = self.name("params.<name> or upstream.<node>")?;
        match root.as_str() {
            "params" => {
                self.expect(".")?;
                Ok(Ref::Param(self.name("a parameter name")?))
            }
            "upstream" => {
                self.expect(".")?;
                let node = self.name("a node id")?;
                if self.eat_sym("[") {
                    let instance = match self.toks.get(self.pos).cloned() {
                        Some((_, Tok::Num(n)))
                            if n >= 0.0 && n.fract() == 0.0 && n <= u32::MAX as f64 =>
                        {
                            n as u32
                        }
                        _ => return self.fail("expected an instance number, as in [0]"),
                    };
                    self.pos += 1;
                    self.expect("]")?;
                    self.expect(".")?;
                    let at = self.at();
                    if self.name("metrics")? != "metrics" {
                        return Err(ParseError {
                            at,
                            message:
                                "of one instance, a condition reads its metrics: [i].metrics.<name>"
                                    .into(),
                        });
                    }
                    let metric = self.metric_name()?;
                    return Ok(Ref::InstanceMetric {
                        node,
                        instance,
                        metric,
                    });
                }
                self.expect(".")?;
                let at = self.at();
                match self.name("state, best or metrics")?.as_str() {
                    "state" => Ok(Ref::State(node)),
                    "metrics" => Ok(Ref::Metrics {
                        node,
                        metric: self.metric_name()?,
                    }),
                    "best" => {
                        self.expect(".")?;
                        let at = self.at();
                        let field = match self.name("run_id, model_uri or metrics")?.as_str() {
                            "run_id" => BestField::RunId,
                            "model_uri" => BestField::ModelUri,
                            "metrics" => BestField::Metric(self.metric_name()?),
                            other => return Err(ParseError { at, message: format!("the best instance has run_id, model_uri and metrics, not {other:?}") }),
                        };
                        Ok(Ref::Best { node, field })
                    }
                    other => Err(ParseError {
                        at,
                        message: format!(
                            "upstream.{node} has state, best, metrics and [i], not {other:?}"
                        ),
                    }),
                }
            }
            _ => unreachable!("atom only calls path on params and upstream"),
        }
    }
}

/// Parses a condition.
///
/// # Errors
/// Where the text stops being a condition, and what was expected there.
pub fn parse(text: &str) -> Result<Expr, ParseError> {
    let toks = lex(text)?;
    if toks.is_empty() {
        return Err(ParseError {
            at: 0,
            message: "the condition is empty".into(),
        });
    }
    let mut p = Parser {
        toks,
        pos: 0,
        end: text.len(),
        depth: 0,
    };
    let e = p.or()?;
    if p.pos < p.toks.len() {
        return p.fail(
            "the condition goes on after a complete expression; join the parts with and / or",
        );
    }
    Ok(e)
}

impl Expr {
    /// Every path it reads, in order.
    pub fn refs(&self) -> Vec<&Ref> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut Vec<&'a Ref>) {
        match self {
            Expr::Ref(r) | Expr::Call(_, r) => out.push(r),
            Expr::Not(e) | Expr::Neg(e) => e.collect(out),
            Expr::Bin(_, l, r) => {
                l.collect(out);
                r.collect(out);
            }
            Expr::Num(_) | Expr::Str(_) | Expr::Bool(_) => {}
        }
    }
}

/// What an expression reads, from a run (or a test).
pub trait Facts {
    fn param(&self, name: &str) -> Option<String>;
    /// A node's state once it is over: `succeeded`, `failed`, `skipped`, `cancelled`.
    fn state(&self, node: &str) -> Option<String>;
    fn best(&self, node: &str, field: &BestField) -> Option<Value>;
    fn instance_metric(&self, node: &str, instance: u32, metric: &str) -> Option<f64>;
    /// The metric of every instance of the node that logged it.
    fn metrics(&self, node: &str, metric: &str) -> Vec<f64>;
}

/// Evaluates a condition to true or false.
///
/// # Errors
/// A value that is not there (a metric no instance logged), a type that does not fit (a string
/// compared with a number that is not one), or a result that is not true/false: each names the
/// path and the value.
pub fn eval(e: &Expr, facts: &dyn Facts) -> Result<bool, String> {
    match value(e, facts)? {
        Value::Bool(b) => Ok(b),
        other => Err(format!(
            "the condition is {other}, not true or false; compare it with something"
        )),
    }
}

fn num(v: &Value, what: &dyn Fn() -> String) -> Result<f64, String> {
    match v {
        Value::Num(n) => Ok(*n),
        Value::Str(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("{} is {v}, not a number", what())),
        Value::Bool(_) => Err(format!("{} is {v}, not a number", what())),
    }
}

fn value(e: &Expr, facts: &dyn Facts) -> Result<Value, String> {
    Ok(match e {
        Expr::Num(n) => Value::Num(*n),
        Expr::Str(s) => Value::Str(s.clone()),
        Expr::Bool(b) => Value::Bool(*b),
        Expr::Ref(r) => lookup(r, facts)?,
        Expr::Call(f, r) => {
            let Ref::Metrics { node, metric } = r else {
                return Err(format!("{r} cannot be aggregated"));
            };
            let v = facts.metrics(node, metric);
            if *f == Func::Count {
                return Ok(Value::Num(v.len() as f64));
            }
            if v.is_empty() {
                return Err(format!(
                    "no instance of node {node:?} logged the metric {metric:?} ({r})"
                ));
            }
            Value::Num(match f {
                Func::Min => v.iter().copied().fold(f64::INFINITY, f64::min),
                Func::Max => v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                _ => v.iter().sum::<f64>() / v.len() as f64,
            })
        }
        Expr::Not(x) => match value(x, facts)? {
            Value::Bool(b) => Value::Bool(!b),
            other => return Err(format!("not needs true or false, not {other}")),
        },
        Expr::Neg(x) => {
            let v = value(x, facts)?;
            Value::Num(-num(&v, &|| "the value after -".into())?)
        }
        Expr::Bin(op @ (Op::And | Op::Or), l, r) => {
            let side = |x: &Expr| match value(x, facts)? {
                Value::Bool(b) => Ok(b),
                other => Err(format!(
                    "{} needs true or false on each side, not {other}",
                    op.text()
                )),
            };
            // Short-circuits, so `upstream.a.state == "succeeded" and upstream.a.best…` reads
            // the second part only when it can be there.
            let left = side(l)?;
            Value::Bool(match op {
                Op::And => left && side(r)?,
                _ => left || side(r)?,
            })
        }
        Expr::Bin(op, l, r) => {
            let (a, b) = (value(l, facts)?, value(r, facts)?);
            match op {
                Op::Eq | Op::Ne => {
                    let same = match (&a, &b) {
                        (Value::Num(x), Value::Str(_)) => {
                            num(&b, &|| "the right side".into())? == *x
                        }
                        (Value::Str(_), Value::Num(y)) => {
                            num(&a, &|| "the left side".into())? == *y
                        }
                        _ => a == b,
                    };
                    Value::Bool(if *op == Op::Eq { same } else { !same })
                }
                _ => {
                    let x = num(&a, &|| format!("the left side of {}", op.text()))?;
                    let y = num(&b, &|| format!("the right side of {}", op.text()))?;
                    match op {
                        Op::Lt => Value::Bool(x < y),
                        Op::Le => Value::Bool(x <= y),
                        Op::Gt => Value::Bool(x > y),
                        Op::Ge => Value::Bool(x >= y),
                        Op::Add => Value::Num(x + y),
                        Op::Sub => Value::Num(x - y),
                        Op::Mul => Value::Num(x * y),
                        _ if y == 0.0 => return Err("a division by zero".into()),
                        _ => Value::Num(x / y),
                    }
                }
            }
        }
    })
}

fn lookup(r: &Ref, facts: &dyn Facts) -> Result<Value, String> {
    let missing = |why: String| Err(format!("{r}: {why}"));
    match r {
        Ref::Param(p) => facts
            .param(p)
            .map(Value::Str)
            .map_or_else(|| missing("the run has no such parameter".into()), Ok),
        Ref::State(n) => facts
            .state(n)
            .map(Value::Str)
            .map_or_else(|| missing(format!("node {n:?} has not ended")), Ok),
        Ref::Best { node, field } => facts.best(node, field).map_or_else(
            || {
                missing(match field {
                    BestField::Metric(m) => {
                        format!("the best instance of {node:?} did not log {m:?}")
                    }
                    _ => format!("nothing was chosen from {node:?}"),
                })
            },
            Ok,
        ),
        Ref::InstanceMetric {
            node,
            instance,
            metric,
        } => facts
            .instance_metric(node, *instance, metric)
            .map(Value::Num)
            .map_or_else(
                || {
                    missing(format!(
                        "instance {instance} of {node:?} did not log {metric:?}"
                    ))
                },
                Ok,
            ),
        Ref::Metrics { node, metric } => {
            let v = facts.metrics(node, metric);
            match v.as_slice() {
                [one] => Ok(Value::Num(*one)),
                [] => missing(format!("no instance of {node:?} logged {metric:?}")),
                _ => missing(format!("{} instances logged it; take min(), max(), mean() of them, or one: upstream.{node}[0].metrics…", v.len())),
            }
        }
    }
}

/// Why the result was what it was, for a person: each path read and its value.
pub fn explain(e: &Expr, facts: &dyn Facts) -> String {
    let mut parts: Vec<String> = Vec::new();
    for r in e.refs() {
        let shown = match lookup(r, facts) {
            Ok(v) => format!("{r} = {v}"),
            Err(_) if matches!(r, Ref::Metrics { .. }) => {
                let Ref::Metrics { node, metric } = r else {
                    unreachable!()
                };
                format!("{r} = {:?}", facts.metrics(node, metric))
            }
            Err(why) => why,
        };
        if !parts.contains(&shown) {
            parts.push(shown);
        }
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Default)]
    struct Known {
        params: BTreeMap<String, String>,
        states: BTreeMap<String, String>,
        metrics: BTreeMap<(String, u32), BTreeMap<String, f64>>,
        best: BTreeMap<String, u32>,
    }

    impl Facts for Known {
        fn param(&self, name: &str) -> Option<String> {
            self.params.get(name).cloned()
        }
        fn state(&self, node: &str) -> Option<String> {
            self.states.get(node).cloned()
        }
        fn best(&self, node: &str, field: &BestField) -> Option<Value> {
            let i = *self.best.get(node)?;
            match field {
                BestField::RunId => Some(Value::Str(format!("run-{node}-{i}"))),
                BestField::ModelUri => Some(Value::Str(format!("runs:/run-{node}-{i}/model"))),
                BestField::Metric(m) => self.instance_metric(node, i, m).map(Value::Num),
            }
        }
        fn instance_metric(&self, node: &str, instance: u32, metric: &str) -> Option<f64> {
            self.metrics
                .get(&(node.to_string(), instance))?
                .get(metric)
                .copied()
        }
        fn metrics(&self, node: &str, metric: &str) -> Vec<f64> {
            self.metrics
                .iter()
                .filter(|((n, _), _)| n == node)
                .filter_map(|(_, m)| m.get(metric).copied())
                .collect()
        }
    }

    fn known() -> Known {
        let mut k = Known::default();
        k.params.insert("target".into(), "prod".into());
        k.params.insert("threshold".into(), "0.9".into());
        k.states.insert("train".into(), "succeeded".into());
        k.states.insert("eval".into(), "failed".into());
        for (i, auc) in [0.85, 0.93, 0.91].into_iter().enumerate() {
            k.metrics.insert(
                ("train".into(), i as u32),
                BTreeMap::from([("val_auc".into(), auc), ("val/loss".into(), 1.0 - auc)]),
            );
        }
        k.best.insert("train".into(), 1);
        k
    }

    fn run(text: &str) -> Result<bool, String> {
        eval(&parse(text).map_err(|e| e.to_string())?, &known())
    }

    #[test]
    fn conditions_read_parameters_states_and_metrics() {
        assert_eq!(
            run(r#"upstream.train.best.metrics.val_auc >= 0.9 and params.target == "prod""#),
            Ok(true)
        );
        assert_eq!(
            run("upstream.train.best.metrics.val_auc >= params.threshold"),
            Ok(true)
        );
        assert_eq!(run("max(upstream.train.metrics.val_auc) > 0.92"), Ok(true));
        assert_eq!(run("min(upstream.train.metrics.val_auc) > 0.9"), Ok(false));
        assert_eq!(run("mean(upstream.train.metrics.val_auc) > 0.89 and count(upstream.train.metrics.val_auc) == 3"), Ok(true));
        assert_eq!(
            run(r#"upstream.train[0].metrics["val/loss"] > 0.1"#),
            Ok(true)
        );
        assert_eq!(run(r#"upstream.eval.state == "failed" or false"#), Ok(true));
        assert_eq!(
            run(r#"not (upstream.train.state != 'succeeded')"#),
            Ok(true)
        );
        assert_eq!(
            run("upstream.train.best.metrics.val_auc - upstream.train[0].metrics.val_auc > 0.05"),
            Ok(true)
        );
        assert_eq!(run("-1 < 2 * 3 - 4 / 2"), Ok(true));
        assert_eq!(
            run("params.threshold == 0.9"),
            Ok(true),
            "a parameter compared with a number is read as one"
        );
        assert_eq!(run("1e-3 < 0.01"), Ok(true));
    }

    #[test]
    fn what_is_missing_or_mistyped_is_named() {
        let e = run("upstream.train.metrics.val_auc > 0.9").unwrap_err();
        assert!(
            e.contains("3 instances logged it") && e.contains("max()"),
            "{e}"
        );
        let e = run("upstream.train.best.metrics.f1 > 0.9").unwrap_err();
        assert!(
            e.contains("upstream.train.best.metrics.f1") && e.contains("did not log \"f1\""),
            "{e}"
        );
        let e = run("params.target > 1").unwrap_err();
        assert!(e.contains("\"prod\", not a number"), "{e}");
        let e = run("upstream.train.best.metrics.val_auc").unwrap_err();
        assert!(e.contains("not true or false"), "{e}");
        assert_eq!(
            run("false and params.nothing == 1"),
            Ok(false),
            "and stops at false"
        );
        let e = run("params.nothing == 1").unwrap_err();
        assert!(e.contains("params.nothing"), "{e}");
    }

    #[test]
    fn bad_text_says_where_and_what() {
        let at = |t: &str| parse(t).unwrap_err();
        assert_eq!(at("params.x = 1").message, "write == to compare");
        assert_eq!(at("params.x = 1").at, 9);
        assert!(at("a > 1").message.contains("\"a\" is not known here"));
        assert!(at("upstream.train.best.accuracy > 1")
            .message
            .contains("run_id, model_uri and metrics"));
        assert!(at("max(params.x)")
            .message
            .contains("upstream.<node>.metrics.<name>"));
        assert!(at("1 < 2 < 3").message.contains("do not chain"));
        assert!(at("params.x == 1 params.y")
            .message
            .contains("join the parts"));
        assert!(at("(params.x == 1").message.contains("expected \")\""));
        assert!(at("params.x == 'open").message.contains("not closed"));
        assert!(at("params.x && true").message.contains("and, or, not"));
        assert!(at("").message.contains("empty"));
        assert!(at(&"(".repeat(40)).message.contains("nests at most"));
        assert!(at(&"1".repeat(3000)).message.contains("at most"));
    }

    #[test]
    fn refs_name_what_a_condition_reads() {
        let e = parse(
            r#"upstream.train.best.run_id != "" and max(upstream.eval.metrics["a b"]) > params.t"#,
        )
        .unwrap();
        let refs: Vec<String> = e.refs().iter().map(|r| r.to_string()).collect();
        assert_eq!(
            refs,
            [
                "upstream.train.best.run_id",
                "upstream.eval.metrics[\"a b\"]",
                "params.t"
            ]
        );
        let nodes: Vec<_> = e.refs().iter().filter_map(|r| r.node()).collect();
        assert_eq!(nodes, ["train", "eval"]);
        assert_eq!(
            explain(
                &parse("max(upstream.train.metrics.val_auc) > 0.9").unwrap(),
                &known()
            ),
            "upstream.train.metrics.val_auc = [0.85, 0.93, 0.91]"
        );
    }

    proptest! {
        /// Any text is answered (parsed or refused with a place inside it), never a panic, and
        /// what parses evaluates without a panic.
        #[test]
        fn any_text_is_parsed_or_refused(text in "[a-z0-9_.\\[\\]()<>=!\"' +*/-]{0,60}") {
            match parse(&text) {
                Ok(e) => { let _ = eval(&e, &known()); }
                Err(e) => prop_assert!(e.at <= text.len()),
            }
        }

        /// Comparisons of numbers agree with Rust's.
        #[test]
        fn comparisons_agree_with_numbers(a in -1000i32..1000, b in -1000i32..1000) {
            let t = |op: &str| run(&format!("{a} {op} {b}")).unwrap();
            prop_assert_eq!(t("<"), a < b);
            prop_assert_eq!(t("<="), a <= b);
            prop_assert_eq!(t(">"), a > b);
            prop_assert_eq!(t(">="), a >= b);
            prop_assert_eq!(t("=="), a == b);
            prop_assert_eq!(t("!="), a != b);
        }
    }
}
