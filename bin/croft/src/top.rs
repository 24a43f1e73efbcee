//! `croft top`: a live view of a running stack for a person at a terminal, from the services'
//! `/metrics` endpoints.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Style, Stylize};
use ratatui::widgets::{Block, Paragraph, Row, Table};

#[derive(clap::Args, Debug)]
pub struct TopArgs {
    /// Services to scrape (base URLs; `/metrics` is added). Repeat or comma-separate.
    #[arg(
        long = "url",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7001,http://127.0.0.1:7002,http://127.0.0.1:7200"
    )]
    urls: Vec<String>,
    /// Matchmaking, to find the instance servers (needs the service credential).
    #[command(flatten)]
    api: crate::ops::MatchmakingApi,
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Print one snapshot as text and exit.
    #[arg(long)]
    once: bool,
}

/// One scrape of every target: (target, samples or the error).
struct Scrape {
    at: Instant,
    targets: Vec<(String, Result<Vec<Sample>, String>)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: String,
    pub value: f64,
}

/// Prometheus text format, the subset the exporters here write: `name{labels} value`.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let value: f64 = value.trim().parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            Some(Sample {
                name: name.trim().to_string(),
                labels: labels.to_string(),
                value,
            })
        })
        .collect()
}

impl Scrape {
    fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.targets
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .flatten()
    }

    fn sum(&self, name: &str, label_filter: impl Fn(&str) -> bool) -> f64 {
        // From +0.0 (an empty float sum is -0.0).
        self.samples()
            .filter(|s| s.name == name && label_filter(&s.labels))
            .fold(0.0, |acc, s| acc + s.value)
    }

    /// Cumulative histogram buckets summed over every series: (le, count), sorted by le.
    fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let mut by_le: HashMap<String, f64> = HashMap::new();
        let bucket = format!("{name}_bucket");
        for s in self.samples().filter(|s| s.name == bucket) {
            if let Some(le) = s
                .labels
                .split(',')
                .find_map(|kv| kv.trim().strip_prefix("le=\""))
            {
                *by_le
                    .entry(le.trim_end_matches('"').to_string())
                    .or_default() += s.value;
            }
        }
        let mut v: Vec<(f64, f64)> = by_le
            .into_iter()
            .filter_map(|(le, c)| {
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, c))
            })
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    }
}

/// The `q` quantile's bucket bound from cumulative buckets (the change since `before`, when
/// given and anything was observed since). None without observations.
pub fn quantile(now: &[(f64, f64)], before: Option<&[(f64, f64)]>, q: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> = match before {
        Some(b) if b.len() == now.len() => now
            .iter()
            .zip(b)
            .map(|((le, n), (_, p))| (*le, (n - p).max(0.0)))
            .collect(),
        _ => now.to_vec(),
    };
    let delta = if delta.last().is_some_and(|(_, c)| *c > 0.0) {
        delta
    } else {
        now.to_vec()
    };
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    delta
        .iter()
        .find(|(_, c)| *c >= q * total)
        .map(|(le, _)| *le)
}

fn scrape(http: &reqwest::blocking::Client, urls: &[String]) -> Scrape {
    let targets = urls
        .iter()
        .map(|u| {
            let url = if u.ends_with("/metrics") {
                u.clone()
            } else {
                format!("{}/metrics", u.trim_end_matches('/'))
            };
            let got = http
                .get(&url)
                .send()
                .and_then(|r| r.error_for_status())
                .and_then(|r| r.text())
                .map(|t| parse(&t))
                .map_err(|e| e.to_string());
            (u.clone(), got)
        })
        .collect();
    Scrape {
        at: Instant::now(),
        targets,
    }
}

/// Instance control URLs from matchmaking's status (none without the credential).
fn instance_urls(args: &TopArgs) -> Vec<String> {
    let Ok(status) = args.api.status() else {
        return Vec::new();
    };
    status.allocator["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["control"].as_str().map(str::to_string))
        .collect()
}

/// The figures shown, from this scrape and the one before (for rates).
pub struct Summary {
    pub lines: Vec<(String, String)>,
    pub targets: Vec<(String, String)>,
}

fn summarize(now: &Scrape, before: Option<&Scrape>) -> Summary {
    let all = |_: &str| true;
    let secs = before.map(|b| now.at.duration_since(b.at).as_secs_f64().max(0.001));
    let rate = |name: &str, f: &dyn Fn(&str) -> bool| -> String {
        match (before, secs) {
            (Some(b), Some(dt)) => {
                format!(
                    "{:.1}/s",
                    ((now.sum(name, f) - b.sum(name, f)) / dt).max(0.0)
                )
            }
            _ => format!("{:.0} total", now.sum(name, f)),
        }
    };
    let ms = |v: Option<f64>| match v {
        Some(s) if s.is_finite() => format!("<= {:.1} ms", s * 1e3),
        Some(_) => "over the largest bucket".to_string(),
        None => "-".to_string(),
    };
    let tick_now = now.buckets("croft_instance_tick_seconds");
    let tick_before = before.map(|b| b.buckets("croft_instance_tick_seconds"));
    let wait_now = now.buckets("croft_matchmaking_queue_wait_seconds");
    let wait_before = before.map(|b| b.buckets("croft_matchmaking_queue_wait_seconds"));
    let five_xx = |l: &str| l.contains("status=\"5");
    let lines = vec![
        (
            "matches running".into(),
            format!("{:.0}", now.sum("croft_instance_matches_running", all)),
        ),
        (
            "players online (lobby)".into(),
            format!("{:.0}", now.sum("croft_connection_clients_connected", all)),
        ),
        (
            "players in matches".into(),
            format!("{:.0}", now.sum("croft_instance_clients_connected", all)),
        ),
        (
            "queued".into(),
            format!("{:.0}", now.sum("croft_matchmaking_queued", all)),
        ),
        (
            "queue wait p50 / p99".into(),
            format!(
                "{} / {}",
                ms(quantile(&wait_now, wait_before.as_deref(), 0.5)),
                ms(quantile(&wait_now, wait_before.as_deref(), 0.99))
            ),
        ),
        (
            "tick p50 / p99".into(),
            format!(
                "{} / {}",
                ms(quantile(&tick_now, tick_before.as_deref(), 0.5)),
                ms(quantile(&tick_now, tick_before.as_deref(), 0.99))
            ),
        ),
        (
            "matches started".into(),
            rate("croft_instance_matches_started_total", &all),
        ),
        ("HTTP 5xx".into(), rate("http_requests_total", &five_xx)),
        (
            "bad client messages".into(),
            rate("croft_instance_bad_messages_total", &all),
        ),
        (
            "events dropped".into(),
            rate("croft_instance_events_dropped_total", &all),
        ),
    ];
    let targets = now
        .targets
        .iter()
        .map(|(u, r)| {
            (
                u.clone(),
                match r {
                    Ok(s) => format!("up ({} series)", s.len()),
                    Err(e) => format!("DOWN: {e}"),
                },
            )
        })
        .collect();
    Summary { lines, targets }
}

/// Scrapes the `/metrics` endpoints (the local stack's by default, instances found through
/// matchmaking) and shows matches, players, queue wait, tick time and error rates, refreshing
/// in place. `--once` prints one plain-text snapshot (scripts, tests) instead.
pub fn run(args: TopArgs) -> anyhow::Result<()> {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let urls = |args: &TopArgs| {
        let mut u = args.urls.clone();
        u.extend(instance_urls(args));
        u.dedup();
        u
    };
    if args.once {
        let first = scrape(&http, &urls(&args));
        let summary = summarize(&first, None);
        for (k, v) in &summary.lines {
            println!("{k:<24} {v}");
        }
        for (u, s) in &summary.targets {
            println!("target {u}: {s}");
        }
        return Ok(());
    }
    let mut terminal = ratatui::try_init().context("opening the terminal")?;
    let result = (|| -> anyhow::Result<()> {
        let mut before: Option<Scrape> = None;
        loop {
            let now = scrape(&http, &urls(&args));
            let summary = summarize(&now, before.as_ref());
            terminal.draw(|f| {
                let [top, bottom] =
                    Layout::vertical([Constraint::Length(12), Constraint::Min(3)]).areas(f.area());
                let rows = summary
                    .lines
                    .iter()
                    .map(|(k, v)| Row::new(vec![k.clone(), v.clone()]));
                f.render_widget(
                    Table::new(rows, [Constraint::Length(26), Constraint::Min(20)])
                        .block(Block::bordered().title(" croft top (q to quit) ".bold())),
                    top,
                );
                let lines: Vec<String> = summary
                    .targets
                    .iter()
                    .map(|(u, s)| format!("{u}  {s}"))
                    .collect();
                f.render_widget(
                    Paragraph::new(lines.join("\n"))
                        .style(Style::default())
                        .block(Block::bordered().title(" targets ")),
                    bottom,
                );
            })?;
            before = Some(now);
            let deadline = Instant::now() + Duration::from_millis(args.interval_ms.max(100));
            while Instant::now() < deadline {
                if event::poll(Duration::from_millis(100))?
                    && let Event::Key(k) = event::read()?
                    && (k.code == KeyCode::Char('q')
                        || (k.code == KeyCode::Char('c')
                            && k.modifiers.contains(KeyModifiers::CONTROL)))
                {
                    return Ok(());
                }
            }
        }
    })();
    ratatui::restore();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE croft_instance_tick_seconds histogram
croft_instance_tick_seconds_bucket{le=\"0.001\"} 50
croft_instance_tick_seconds_bucket{le=\"0.005\"} 98
croft_instance_tick_seconds_bucket{le=\"+Inf\"} 100
croft_instance_tick_seconds_sum 0.2
croft_instance_tick_seconds_count 100
http_requests_total{method=\"GET\",route=\"/x\",status=\"503\"} 4
http_requests_total{method=\"GET\",route=\"/x\",status=\"200\"} 40
croft_instance_matches_running 7
";

    #[test]
    fn parses_exporter_text_and_reads_quantiles_from_buckets() {
        let samples = parse(TEXT);
        assert_eq!(samples.len(), 8);
        assert_eq!(
            samples[6].labels,
            "method=\"GET\",route=\"/x\",status=\"200\""
        );
        let s = Scrape {
            at: Instant::now(),
            targets: vec![("a".into(), Ok(samples))],
        };
        assert_eq!(
            s.sum("http_requests_total", |l| l.contains("status=\"5")),
            4.0
        );
        let b = s.buckets("croft_instance_tick_seconds");
        assert_eq!(b.len(), 3);
        assert_eq!(quantile(&b, None, 0.5), Some(0.001));
        assert_eq!(quantile(&b, None, 0.98), Some(0.005));
        assert_eq!(quantile(&b, None, 0.99), Some(f64::INFINITY));
        // Since an earlier scrape: only what was observed in between counts.
        let before = vec![(0.001, 50.0), (0.005, 50.0), (f64::INFINITY, 50.0)];
        assert_eq!(quantile(&b, Some(&before), 0.5), Some(0.005));
        assert_eq!(quantile(&[], None, 0.5), None);
        let summary = summarize(&s, None);
        assert!(
            summary
                .lines
                .iter()
                .any(|(k, v)| k == "matches running" && v == "7")
        );
        assert!(
            summary
                .lines
                .iter()
                .any(|(k, v)| k == "HTTP 5xx" && v == "4 total")
        );
    }
}
