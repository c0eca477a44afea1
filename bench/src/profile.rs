//! The edge's CPU profile: V8's sampling profiler in workerd, reached through wrangler's
//! inspector (the Chrome DevTools protocol over a WebSocket). The Worker and its Durable
//! Objects share one isolate locally, so one profile holds all of the edge's JavaScript and
//! wasm. `--profile-edge` writes it as a `.cpuprofile` (DevTools' Performance panel opens it)
//! and the bench prints where the samples fell. Samples are taken by the clock: a call that
//! blocks the isolate's thread (a storage write in local workerd) counts like one that computes.

use std::collections::HashMap;
use std::net::TcpStream;
use std::path::Path;

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

pub struct Profiler {
    ws: WebSocket<TcpStream>,
    next_id: u64,
}

impl Profiler {
    /// Starts sampling the stack's edge every 100 µs.
    pub fn of(stack: &concurrent_tests::Stack) -> Profiler {
        Profiler::start(
            stack
                .edge
                .inspector_port
                .expect("the edge's inspector port"),
        )
    }

    /// Attaches to the first target wrangler's inspector on `port` lists and starts sampling.
    fn start(port: u16) -> Profiler {
        let targets: Value = reqwest::blocking::get(format!("http://127.0.0.1:{port}/json"))
            .and_then(|r| r.json())
            .unwrap_or_else(|e| panic!("the edge's inspector on port {port} did not answer: {e}"));
        let url = targets[0]["webSocketDebuggerUrl"]
            .as_str()
            .unwrap_or_else(|| panic!("the edge's inspector lists no target: {targets}"));
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("inspector socket");
        let (ws, _) = tungstenite::client(url, stream).expect("inspector WebSocket handshake");
        let mut p = Profiler { ws, next_id: 0 };
        p.call("Profiler.enable", json!({}));
        p.call("Profiler.setSamplingInterval", json!({"interval": 100}));
        p.call("Profiler.start", json!({}));
        p
    }

    /// Stops sampling: the profile (`Profiler.Profile`), its anonymous JavaScript functions
    /// named after the wasm import each is (see [`import_name`]). (workerd answers only the
    /// sampling profiler's commands: V8's call counts, `startPreciseCoverage`, are refused.)
    pub fn stop(mut self) -> Value {
        let mut samples = self.call("Profiler.stop", json!({}))["profile"].take();
        self.call("Debugger.enable", json!({}));
        let mut sources: HashMap<String, String> = HashMap::new();
        let mut source = |p: &mut Profiler, script: &str| -> String {
            sources
                .entry(script.to_string())
                .or_insert_with(|| {
                    let s = p.call("Debugger.getScriptSource", json!({"scriptId": script}));
                    s["scriptSource"].as_str().unwrap_or_default().to_string()
                })
                .clone()
        };
        for node in samples["nodes"].as_array_mut().into_iter().flatten() {
            let frame = &mut node["callFrame"];
            let script = frame["scriptId"].as_str().unwrap_or_default().to_string();
            if frame["functionName"] != "" || script.is_empty() || script == "0" {
                continue;
            }
            let text = source(&mut self, &script);
            let (line, column) = (frame["lineNumber"].as_u64(), frame["columnNumber"].as_u64());
            let found = line.zip(column).and_then(|(l, c)| {
                let line = text.lines().nth(l as usize)?;
                import_name(line.get(..c as usize)?)
            });
            if let Some(name) = found {
                frame["functionName"] = json!(format!("{name} (wasm import)"));
            }
        }
        self.call("Debugger.disable", json!({}));
        samples
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(msg)).expect("inspector send");
        loop {
            // Events (console messages and the like) come between; only our answer counts.
            let Message::Text(text) = self.ws.read().expect("inspector read") else {
                continue;
            };
            let v: Value = serde_json::from_str(&text).expect("inspector JSON");
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
        }
    }
}

/// Writes the profile for DevTools and prints the `top` functions by self time, and self time
/// by crate (the first segment of a Rust name; JavaScript by its file).
pub fn report(profile: &Value, file: &Path, per: (usize, &str), top: usize) {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).expect("the profile's directory");
    }
    std::fs::write(file, profile.to_string()).expect("write the profile");
    let nodes = profile["nodes"].as_array().cloned().unwrap_or_default();
    let name_of: HashMap<u64, String> = nodes
        .iter()
        .map(|n| (n["id"].as_u64().unwrap_or(0), frame_name(&n["callFrame"])))
        .collect();
    // Self time: each sample's delta is charged to the node it fell in.
    let mut by_fn: HashMap<&str, f64> = HashMap::new();
    let samples = profile["samples"].as_array().cloned().unwrap_or_default();
    let deltas = profile["timeDeltas"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (s, d) in samples.iter().zip(deltas.iter().skip(1).chain([&json!(0)])) {
        let name = name_of
            .get(&s.as_u64().unwrap_or(0))
            .map_or("?", String::as_str);
        *by_fn.entry(name).or_default() += d.as_f64().unwrap_or(0.0) / 1e3;
    }
    // Waiting, and V8's own bookkeeping, are not the edge's work.
    let idle = by_fn.remove("(idle)").unwrap_or(0.0) + by_fn.remove("(program)").unwrap_or(0.0);
    let busy: f64 = by_fn.values().sum();
    let mut by_crate: HashMap<String, f64> = HashMap::new();
    for (name, ms) in &by_fn {
        *by_crate.entry(crate_of(name)).or_default() += ms;
    }
    println!(
        "edge CPU profile: {} ({} samples: {busy:.0} ms busy, {idle:.0} ms idle or V8's own)",
        file.display(),
        samples.len()
    );
    let crates = by_crate.iter().map(|(k, v)| (k.as_str(), *v));
    print_top("by crate (self time)", crates, busy, per, top);
    print_top("by function (self time)", by_fn.into_iter(), busy, per, top);
    let ours = inclusive(&nodes, &name_of, &samples, &deltas, |name| {
        name.starts_with("concurrent_edge") || name.starts_with("concurrent_core")
    });
    let ours = ours.iter().map(|(k, v)| (k.as_str(), *v));
    print_top(
        "the edge's own functions (with what they call)",
        ours,
        busy,
        per,
        top,
    );
}

/// Time under each function that `keep` selects, what it calls included: a sample counts once
/// for every such function on its stack (a recursive one once), so the rows overlap.
fn inclusive(
    nodes: &[Value],
    name_of: &HashMap<u64, String>,
    samples: &[Value],
    deltas: &[Value],
    keep: impl Fn(&str) -> bool,
) -> HashMap<String, f64> {
    let mut parent: HashMap<u64, u64> = HashMap::new();
    for n in nodes {
        for child in n["children"].as_array().into_iter().flatten() {
            parent.insert(child.as_u64().unwrap_or(0), n["id"].as_u64().unwrap_or(0));
        }
    }
    let mut out: HashMap<String, f64> = HashMap::new();
    for (s, d) in samples.iter().zip(deltas.iter().skip(1).chain([&json!(0)])) {
        let ms = d.as_f64().unwrap_or(0.0) / 1e3;
        let mut seen = std::collections::HashSet::new();
        let mut at = s.as_u64();
        while let Some(id) = at {
            if let Some(name) = name_of.get(&id) {
                if keep(name) && seen.insert(name.as_str()) {
                    *out.entry(name.clone()).or_default() += ms;
                }
            }
            at = parent.get(&id).copied();
        }
    }
    out
}

fn print_top<'a>(
    title: &str,
    rows: impl Iterator<Item = (&'a str, f64)>,
    busy: f64,
    (count, unit): (usize, &str),
    top: usize,
) {
    let mut rows: Vec<(&str, f64)> = rows.collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!("  {title}, in all / per {unit} ({count}) / share:");
    for (name, ms) in rows.into_iter().take(top) {
        let name: String = name.chars().take(100).collect();
        let each = ms / count.max(1) as f64;
        println!(
            "    {ms:>8.0} ms {each:>7.2} ms {:>5.1} %  {name}",
            100.0 * ms / busy
        );
    }
}

/// The wasm import a function of the bundle is: wasm-bindgen's glue declares each as
/// `__wbg_<name>_<hash>: /* @__PURE__ */ __name(function(…) {`, so the last such key on the
/// function's line before it (`before`) names it (`exec` is SQL storage's, `setAlarm` the
/// alarm's).
fn import_name(before: &str) -> Option<String> {
    let key = &before[before.rfind("__wbg_")? + "__wbg_".len()..];
    let key = &key[..key.find(':')?];
    let name = match key.rsplit_once('_') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name
        }
        _ => key,
    };
    Some(name.to_string())
}

fn frame_name(frame: &Value) -> String {
    let f = frame["functionName"].as_str().unwrap_or_default();
    let url = frame["url"].as_str().unwrap_or_default();
    match (f, url) {
        ("", "") => "(anonymous)".into(),
        // The runtime's own functions (fetch, Response, a stream's read…) have no script.
        (f, "") if !f.starts_with('(') && !f.contains("::") => format!("{f} (runtime)"),
        ("", url) => format!("(anonymous) {}", short(url)),
        (f, url) if url.ends_with(".js") || url.ends_with(".mjs") => {
            format!("{f} {}", short(url))
        }
        (f, _) => f.to_string(),
    }
}

fn short(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

/// `concurrent_core::run::x::y` → `concurrent_core`; `<T as serde::de::X>::f` → `serde`;
/// a JavaScript frame → its file; V8's own entries as they are.
fn crate_of(name: &str) -> String {
    if name.starts_with('(') {
        // V8's own entries, and `(anonymous) file.js`.
        return match name.split_once(") ") {
            Some((_, file)) => format!("js: {file}"),
            None => name.to_string(),
        };
    }
    if name.ends_with(" (runtime)") {
        return "the runtime's API (workerd)".into();
    }
    if name.ends_with(" (wasm import)") {
        return "wasm imports (JavaScript glue and the API calls they make)".into();
    }
    if let Some((_, file)) = name.rsplit_once(' ') {
        if file.ends_with(".js") || file.ends_with(".mjs") {
            return format!("js: {file}");
        }
    }
    let name = name.trim_start_matches('<').trim_start_matches('&');
    let name = name.strip_prefix("mut ").unwrap_or(name);
    let head = name.split("::").next().unwrap_or(name);
    // Rust's own crates carry a disambiguator: `core[c5930c85a12de822]`.
    let head = head.split('[').next().unwrap_or(head);
    if head == name {
        "(other)".into()
    } else {
        head.to_string()
    }
}
