//! What a run prints: the summary table, and a self-contained HTML report with plots.

use std::fmt::Write;

use crate::world::Outcome;

fn human_bytes(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", units[unit]) }
}

fn human_time(seconds: f64) -> String {
    if seconds >= 3600.0 {
        format!("{:.2} h", seconds / 3600.0)
    } else if seconds >= 60.0 {
        format!("{:.1} min", seconds / 60.0)
    } else {
        format!("{seconds:.1} s")
    }
}

/// The summary table of one run.
pub fn summary(o: &Outcome) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "scenario {} · seed {} · {} nodes", o.scenario, o.seed, o.nodes);
    let _ = writeln!(
        out,
        "  virtual time {} in {:.2} s wall: speed {:.0}x real time",
        human_time(o.virtual_time_s),
        o.wall_time_s,
        o.speed
    );
    let _ = writeln!(
        out,
        "  events {} · messages {} · bytes moved {} · retransmissions {} · dials {} ({} failed)",
        o.trace_events,
        o.network.messages,
        human_bytes(o.network.bytes),
        o.network.retransmissions,
        o.network.dials,
        o.network.failed_dials
    );
    let _ = writeln!(
        out,
        "  uploads {} ({} failed) · downloads {} ({} failed) · crashes {} · restarts {} · departures {} · arrivals {}",
        o.uploads_acknowledged,
        o.uploads_failed,
        o.downloads_completed,
        o.downloads_failed,
        o.crashes,
        o.restarts,
        o.departures,
        o.arrivals
    );
    if let Some(c) = &o.chain {
        let _ = writeln!(
            out,
            "  chain ({}): {} blocks · {} transactions ({} reverted, {} dropped by the pool, {} sent again) · {} requests ({} refused) · walk: {} fills, {} repairs, {} proofs, {} slashes{}",
            c.stats.backend,
            c.stats.blocks,
            c.stats.transactions,
            c.stats.reverted,
            c.stats.dropped,
            c.stats.resent,
            c.stats.requests,
            c.stats.refused,
            c.fills,
            c.repairs,
            c.proofs,
            c.slashes,
            c.walk_error.as_ref().map(|e| format!(" · FAILED: {e}")).unwrap_or_default()
        );
        let _ = writeln!(
            out,
            "  chain speed: {:.0} transactions per wall second ({:.0} requests)",
            c.stats.transactions as f64 / o.wall_time_s.max(1e-9),
            c.stats.requests as f64 / o.wall_time_s.max(1e-9),
        );
    }
    let d = &o.disk;
    if d.commits_lost + d.torn_blocks + d.bit_rot + d.latent_errors + d.misdirected_writes + d.full_refusals
        > 0
    {
        let _ = writeln!(
            out,
            "  disk faults: commits lost {} · torn blocks {} · bit rot {} · latent errors {} ({} failed reads) · misdirected {} · full {}",
            d.commits_lost,
            d.torn_blocks,
            d.bit_rot,
            d.latent_errors,
            d.read_errors,
            d.misdirected_writes,
            d.full_refusals
        );
    }
    let _ = writeln!(out, "  dht lookups {} · provider records lost {}", o.dht_lookups, o.dht_records_lost);
    let probes: Vec<String> = o.probes.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ =
        writeln!(out, "  sometimes: {}", if probes.is_empty() { "none".into() } else { probes.join(" · ") });
    let _ = writeln!(out, "  {:<11} {:<6} detail", "invariant", "result");
    for v in &o.invariants {
        let _ = writeln!(out, "  {:<11} {:<6} {}", v.name, if v.passed { "pass" } else { "FAIL" }, v.detail);
    }
    let verdict = match (&o.expected_failure, o.ok()) {
        (None, true) => "PASS".to_string(),
        (None, false) => {
            let names: Vec<&str> = o.failed().iter().map(|v| v.name.as_str()).collect();
            format!("FAIL: {}", names.join(", "))
        }
        (Some(expected), true) => format!("PASS: failed as expected ({expected})"),
        (Some(expected), false) => format!("FAIL: expected exactly {expected} to fail"),
    };
    let _ = writeln!(out, "  trace hash {} · {verdict}", o.trace_hash);
    out
}

/// An SVG line plot of `series` over the run's time samples.
fn plot(title: &str, o: &Outcome, series: &[(&str, &str, Vec<f64>)]) -> String {
    let (w, h, pad) = (640.0, 220.0, 40.0);
    let t_max = o.timeline.last().map(|s| s.t_s).unwrap_or(1.0).max(1e-9);
    let y_max = series.iter().flat_map(|(_, _, ys)| ys.iter().copied()).fold(1.0f64, f64::max);
    let mut svg = format!(
        "<figure><figcaption>{title}</figcaption><svg viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\">\
         <rect x=\"{pad}\" y=\"10\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>\
         <text x=\"4\" y=\"20\" font-size=\"11\">{y_max:.0}</text><text x=\"4\" y=\"{}\" font-size=\"11\">0</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\">{}</text>",
        w - pad - 10.0,
        h - pad - 10.0,
        h - pad,
        w - pad - 50.0,
        h - pad + 20.0,
        human_time(t_max)
    );
    for (k, (name, color, ys)) in series.iter().enumerate() {
        let points: Vec<String> = o
            .timeline
            .iter()
            .zip(ys)
            .map(|(s, y)| {
                let x = pad + (s.t_s / t_max) * (w - pad * 2.0 - 10.0);
                let yy = 10.0 + (1.0 - y / y_max) * (h - pad - 10.0);
                format!("{x:.1},{yy:.1}")
            })
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"{color}\">{name}</text>",
            points.join(" "),
            pad + 10.0 + 160.0 * k as f64,
            h - 8.0
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

/// A self-contained HTML page: the summary and plots of live nodes, data availability and
/// traffic over virtual time.
pub fn html(o: &Outcome) -> String {
    let live: Vec<f64> = o.timeline.iter().map(|s| s.live_nodes as f64).collect();
    let datasets: Vec<f64> = o.timeline.iter().map(|s| s.datasets as f64).collect();
    let available: Vec<f64> = o.timeline.iter().map(|s| s.datasets_available as f64).collect();
    let mib: Vec<f64> = o.timeline.iter().map(|s| s.bytes_sent as f64 / (1 << 20) as f64).collect();
    let escape = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{name} seed {seed}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}pre{{background:#f6f6f6;padding:1em}}figure{{margin:1em 0}}</style>\
         </head><body><h1>{name} · seed {seed}</h1><pre>{summary}</pre>{p1}{p2}{p3}</body></html>\n",
        name = escape(&o.scenario),
        seed = o.seed,
        summary = escape(&summary(o)),
        p1 = plot("Live nodes", o, &[("live nodes", "#1f77b4", live)]),
        p2 = plot(
            "Datasets: acknowledged, and with an intact copy on a node that has not departed",
            o,
            &[("acknowledged", "#999999", datasets), ("available", "#2ca02c", available)]
        ),
        p3 = plot("Traffic (MiB sent, cumulative)", o, &[("MiB", "#d62728", mib)]),
    )
}
