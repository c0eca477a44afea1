//! The sweep editor of a project node: a grid (values per parameter) or random samples
//! (a distribution per parameter, a seed), whether points cross the node's partitions, and how
//! many points that makes. The fields' text is read and written by core's `sweep_form`.

use std::collections::BTreeMap;

use concurrent_core::design::sweep_form::{
    distribution_from_text, distribution_to_text, values_from_text, values_to_text, DISTRIBUTIONS,
};
use concurrent_core::sweep::{Distribution, RandomSweep, Sweep};
use concurrent_core::template::NodeKind;
use leptos::prelude::*;

use super::Session;

/// An edit of a node's sweep (`None`: no sweep).
type SweepEdit = Box<dyn FnOnce(&mut Option<Sweep>) -> Result<(), String>>;

#[component]
pub(super) fn SweepEditor(session: Session, id: String) -> impl IntoView {
    let id = StoredValue::new(id);
    let sweep = move || {
        session.editor.with(
            |e| match e.template().node(&id.read_value()).map(|n| &n.kind) {
                Some(NodeKind::Project(p)) => p.sweep.clone(),
                _ => None,
            },
        )
    };
    let change = move |f: SweepEdit| {
        let id = id.get_value();
        let mut refused = None;
        session.edit(|e| {
            e.update_node(&id, |n| {
                if let NodeKind::Project(p) = &mut n.kind {
                    if let Err(why) = f(&mut p.sweep) {
                        refused = Some(why);
                    }
                }
            })
        });
        if let Some(why) = refused {
            session.complain(why);
        }
    };
    let kind = move || match sweep() {
        None => "none",
        Some(s) if s.random.is_some() => "random",
        Some(_) => "grid",
    };
    let set_kind = move |k: String| {
        change(Box::new(move |s| {
            *s = match k.as_str() {
                "grid" => Some(Sweep {
                    grid: BTreeMap::from([("alpha".into(), vec!["0.1".into(), "1".into()])]),
                    ..Default::default()
                }),
                "random" => Some(Sweep {
                    random: Some(RandomSweep {
                        samples: 8,
                        seed: 0,
                        parameters: BTreeMap::from([(
                            "alpha".into(),
                            Distribution::LogUniform(0.001, 1.0),
                        )]),
                    }),
                    ..Default::default()
                }),
                _ => None,
            };
            Ok(())
        }))
    };
    let points = move || sweep().map(|s| s.count()).unwrap_or(0);
    let grid_rows = move || {
        sweep()
            .map(|s| s.grid.into_iter().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let random_rows = move || {
        sweep()
            .and_then(|s| s.random)
            .map(|r| r.parameters.into_iter().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let random = move || sweep().and_then(|s| s.random);
    let rename = move |old: String, new: String| -> SweepEdit {
        Box::new(move |s| {
            let Some(s) = s else { return Ok(()) };
            let new = new.trim().to_string();
            if new.is_empty() || new == old {
                return Ok(());
            }
            if let Some(v) = s.grid.remove(&old) {
                s.grid.insert(new.clone(), v);
            }
            if let Some(r) = s.random.as_mut() {
                if let Some(d) = r.parameters.remove(&old) {
                    r.parameters.insert(new, d);
                }
            }
            Ok(())
        })
    };
    let add = move |_| {
        change(Box::new(move |s| {
            let Some(s) = s else { return Ok(()) };
            let taken = |k: &String| {
                s.grid.contains_key(k)
                    || s.random
                        .as_ref()
                        .is_some_and(|r| r.parameters.contains_key(k))
            };
            let name = (1..)
                .map(|i| format!("param{i}"))
                .find(|k| !taken(k))
                .unwrap_or_default();
            match s.random.as_mut() {
                Some(r) => {
                    r.parameters.insert(name, Distribution::Uniform(0.0, 1.0));
                }
                None => {
                    s.grid.insert(name, vec!["1".into()]);
                }
            }
            Ok(())
        }))
    };
    let remove = move |name: String| -> SweepEdit {
        Box::new(move |s| {
            if let Some(s) = s {
                s.grid.remove(&name);
                if let Some(r) = s.random.as_mut() {
                    r.parameters.remove(&name);
                }
            }
            Ok(())
        })
    };
    view! {
        <fieldset class="cc-sweep" data-sweep="">
            <legend>"Sweep (one instance per point, each its own MLflow run)"</legend>
            <label class="cc-field"><span>"Points from"</span>
                <select name="sweepKind" prop:value=move || kind().to_string() on:change=move |e| set_kind(event_target_value(&e))>
                    <option value="none">"no sweep"</option>
                    <option value="grid">"a grid: every combination of the values"</option>
                    <option value="random">"random samples (seeded: a rerun draws the same)"</option>
                </select></label>
            {move || (kind() == "grid").then(|| view! {
                {grid_rows().into_iter().map(|(name, values)| {
                    let (n1, n2, n3) = (name.clone(), name.clone(), name.clone());
                    view! {
                        <div class="cc-row cc-sweep-param" data-sweep-param=name.clone()>
                            <input type="text" name="sweepParam" prop:value=name.clone() on:change=move |e| change(rename(n1.clone(), event_target_value(&e))) />
                            <input type="text" name="sweepValues" placeholder="0.1, 1, 10" prop:value=values_to_text(&values)
                                on:change=move |e| { let v = values_from_text(&event_target_value(&e)); let k = n2.clone(); change(Box::new(move |s| { if let Some(s) = s { s.grid.insert(k, v); } Ok(()) })) } />
                            <button class="cc-link" title="Remove" on:click=move |_| change(remove(n3.clone()))>"×"</button>
                        </div>
                    }
                }).collect_view()}
            })}
            {move || (kind() == "random").then(|| view! {
                <div class="cc-row">
                    <label class="cc-field"><span>"Samples"</span>
                        <input type="text" name="sweepSamples" prop:value=move || random().map(|r| r.samples.to_string()).unwrap_or_default()
                            on:change=move |e| { let v = event_target_value(&e); change(Box::new(move |s| {
                                let n: u32 = v.trim().parse().map_err(|_| format!("samples must be a whole number, not {v:?}"))?;
                                if let Some(r) = s.as_mut().and_then(|s| s.random.as_mut()) { r.samples = n; }
                                Ok(())
                            })) } /></label>
                    <label class="cc-field"><span>"Seed"</span>
                        <input type="text" name="sweepSeed" prop:value=move || random().map(|r| r.seed.to_string()).unwrap_or_default()
                            on:change=move |e| { let v = event_target_value(&e); change(Box::new(move |s| {
                                let n: u64 = v.trim().parse().map_err(|_| format!("the seed must be a whole number, not {v:?}"))?;
                                if let Some(r) = s.as_mut().and_then(|s| s.random.as_mut()) { r.seed = n; }
                                Ok(())
                            })) } /></label>
                </div>
                {random_rows().into_iter().map(|(name, d)| {
                    let (dist, text) = distribution_to_text(&d);
                    let (n1, n2, n3, n4) = (name.clone(), name.clone(), name.clone(), name.clone());
                    let text2 = text.clone();
                    view! {
                        <div class="cc-row cc-sweep-param" data-sweep-param=name.clone()>
                            <input type="text" name="sweepParam" prop:value=name.clone() on:change=move |e| change(rename(n1.clone(), event_target_value(&e))) />
                            <select name="sweepDistribution" prop:value=dist.to_string()
                                on:change=move |e| { let k = event_target_value(&e); let name = n2.clone(); let text = text2.clone(); change(Box::new(move |s| {
                                    let d = distribution_from_text(&k, &text).or_else(|_| distribution_from_text(&k, if k == "choice" { "a, b" } else { "1, 10" }))?;
                                    if let Some(r) = s.as_mut().and_then(|s| s.random.as_mut()) { r.parameters.insert(name, d); }
                                    Ok(())
                                })) }>
                                {DISTRIBUTIONS.iter().map(|d| view! { <option value=*d>{*d}</option> }).collect_view()}
                            </select>
                            <input type="text" name="sweepRange" placeholder="low, high" prop:value=text
                                on:change=move |e| { let v = event_target_value(&e); let name = n3.clone(); let k = dist; change(Box::new(move |s| {
                                    let d = distribution_from_text(k, &v)?;
                                    if let Some(r) = s.as_mut().and_then(|s| s.random.as_mut()) { r.parameters.insert(name, d); }
                                    Ok(())
                                })) } />
                            <button class="cc-link" title="Remove" on:click=move |_| change(remove(n4.clone()))>"×"</button>
                        </div>
                    }
                }).collect_view()}
            })}
            {move || (kind() != "none").then(|| view! {
                <button class="cc-link" data-action="add-sweep-param" on:click=add>"+ swept parameter"</button>
                <label class="cc-check"><input type="checkbox" name="crossPartitions" prop:checked=move || sweep().is_some_and(|s| s.cross_partitions)
                    on:change=move |e| { let on = event_target_checked(&e); change(Box::new(move |s| { if let Some(s) = s { s.cross_partitions = on; } Ok(()) })) } />
                    <span>"Run every point on each partition of the inputs (points × instances)"</span></label>
                <p class="cc-hint" data-sweep-points=move || points().to_string()>{move || format!("{} point(s)", points())}</p>
            })}
        </fieldset>
    }
}
