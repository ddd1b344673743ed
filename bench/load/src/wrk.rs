//! The wrk driver: signs distinct webhooks into files, one per wrk thread, and has wrk
//! replay them (`replay.lua`) over keep-alive connections from a process of its own. A
//! warm-up run with its own webhooks comes first; only the second run is reported.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use super::{Args, RunResult, load_webhook};

const SCRIPT: &str = include_str!("replay.lua");

pub async fn run(name: &'static str, addr: SocketAddr, args: &Args) -> anyhow::Result<RunResult> {
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("replay.lua");
    std::fs::write(&script, SCRIPT)?;
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(args.connections)
        .max(1);
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let url = format!("http://{addr}");
    // Signs `count` webhooks of their own for one wrk run of `seconds`, and runs it.
    let phase = async |label: &str, count: usize, seconds: u64| {
        let prefix = dir.path().join(format!("{label}-"));
        write_requests(
            &prefix,
            threads,
            count.max(threads),
            &format!("wrk-{run_id}-{label}"),
        )?;
        wrk(&script, &prefix, &url, threads, args.connections, seconds).await
    };
    if args.warmup_seconds > 0 {
        phase("warmup", args.wrk_requests / 5, args.warmup_seconds).await?;
    }
    let output = phase("measured", args.wrk_requests, args.seconds).await?;
    let report = parse(&output).with_context(|| format!("cannot read wrk's report:\n{output}"))?;
    if report.requests > args.wrk_requests as u64 {
        eprintln!(
            "{name}: wrk sent {} requests, more than the {} signed; the rest were repeats",
            report.requests, args.wrk_requests
        );
    }
    Ok(RunResult {
        name,
        requests: report.requests,
        errors: report.errors,
        accepted: 0,
        elapsed: Duration::from_secs_f64(report.seconds),
        p50_ms: report.p50_ms,
        p99_ms: report.p99_ms,
    })
}

/// `count` distinct signed Shopify webhooks as raw HTTP/1.1 requests, dealt round-robin
/// into `<prefix><thread>.bin`, each followed by a NUL byte.
fn write_requests(
    prefix: &Path,
    threads: usize,
    count: usize,
    id_prefix: &str,
) -> anyhow::Result<()> {
    let mut files = (0..threads)
        .map(|thread| {
            let path = format!("{}{thread}.bin", prefix.display());
            std::fs::File::create(&path)
                .map(std::io::BufWriter::new)
                .with_context(|| format!("create {path}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    for n in 0..count {
        let webhook = load_webhook(&format!("{id_prefix}-{n}"));
        let file = &mut files[n % threads];
        write!(
            file,
            "POST {} HTTP/1.1\r\nhost: 127.0.0.1\r\n",
            webhook.path
        )?;
        for (header, value) in &webhook.headers {
            write!(file, "{header}: {value}\r\n")?;
        }
        write!(file, "content-length: {}\r\n\r\n", webhook.body.len())?;
        file.write_all(&webhook.body)?;
        file.write_all(b"\0")?;
    }
    for mut file in files {
        file.flush()?;
    }
    Ok(())
}

async fn wrk(
    script: &Path,
    prefix: &Path,
    url: &str,
    threads: usize,
    connections: usize,
    seconds: u64,
) -> anyhow::Result<String> {
    let mut command = Command::new("wrk");
    command
        .arg(format!("--threads={threads}"))
        .arg(format!("--connections={connections}"))
        .arg(format!("--duration={seconds}s"))
        .arg("--latency")
        .arg("--script")
        .arg(script)
        .arg(url)
        .arg("--")
        .arg(prefix);
    // wrk ends on its own after `--duration`; its run blocks a thread of tokio's blocking
    // pool, not the workers serving the gateway.
    let output = tokio::task::spawn_blocking(move || command.output())
        .await?
        .context("cannot run wrk: is it installed (apt-get install wrk)?")?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

/// What the tool takes from wrk's report.
#[derive(Debug, PartialEq)]
struct Report {
    requests: u64,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Non-2xx/3xx answers and socket errors (connect, read, write, timeout).
    errors: u64,
}

fn parse(output: &str) -> Option<Report> {
    let mut requests = None;
    let mut seconds = None;
    let mut p50_ms = None;
    let mut p99_ms = None;
    let mut errors = 0u64;
    for line in output.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [count, "requests", "in", took, ..] => {
                requests = count.parse().ok();
                seconds = duration_ms(took.trim_end_matches(',')).map(|ms| ms / 1000.0);
            }
            ["50%", value] => p50_ms = duration_ms(value),
            ["99%", value] => p99_ms = duration_ms(value),
            ["Non-2xx", "or", "3xx", "responses:", count] => errors += count.parse::<u64>().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                // "connect 0, read 0, write 0, timeout 0"
                for pair in rest.chunks(2) {
                    if let [_, count] = pair {
                        errors += count.trim_end_matches(',').parse::<u64>().ok()?;
                    }
                }
            }
            _ => {}
        }
    }
    Some(Report {
        requests: requests?,
        seconds: seconds?,
        p50_ms: p50_ms?,
        p99_ms: p99_ms?,
        errors,
    })
}

/// wrk's durations: `635.91us`, `1.20ms`, `10.10s`, `1.50m`.
fn duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return None,
    };
    Some(number * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 10s test @ http://127.0.0.1:40123
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     7.90ms    3.10ms  45.20ms   71.00%
    Req/Sec     4.10k   310.00     4.90k    70.00%
  Latency Distribution
     50%    7.31ms
     75%    9.02ms
     90%   11.50ms
     99%   23.08ms
  82000 requests in 10.02s, 14.20MB read
  Non-2xx or 3xx responses: 3
  Socket errors: connect 0, read 1, write 0, timeout 2
Requests/sec:   8183.63
Transfer/sec:      1.42MB
";

    #[test]
    fn reads_wrk_reports() {
        let report = parse(REPORT).expect("a report");
        assert_eq!(report.requests, 82_000);
        assert!((report.seconds - 10.02).abs() < 1e-9);
        assert!((report.p50_ms - 7.31).abs() < 1e-9);
        assert!((report.p99_ms - 23.08).abs() < 1e-9);
        assert_eq!(report.errors, 6);
    }

    #[test]
    fn a_clean_run_has_no_errors_and_microsecond_latencies_convert() {
        let clean = REPORT
            .replace("  Non-2xx or 3xx responses: 3\n", "")
            .replace("read 1, write 0, timeout 2", "read 0, write 0, timeout 0")
            .replace("7.31ms", "635.91us");
        let report = parse(&clean).expect("a report");
        assert_eq!(report.errors, 0);
        assert!((report.p50_ms - 0.63591).abs() < 1e-9);
    }

    #[test]
    fn a_truncated_report_is_refused() {
        assert_eq!(parse("Running 10s test @ http://127.0.0.1:1\n"), None);
    }

    #[test]
    fn replay_files_hold_distinct_signed_requests_per_thread() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("r-");
        write_requests(&prefix, 2, 5, "t").unwrap();
        let first = std::fs::read(dir.path().join("r-0.bin")).unwrap();
        let second = std::fs::read(dir.path().join("r-1.bin")).unwrap();
        let requests: Vec<&[u8]> = first
            .split(|b| *b == 0)
            .chain(second.split(|b| *b == 0))
            .filter(|r| !r.is_empty())
            .collect();
        assert_eq!(requests.len(), 5);
        for request in &requests {
            let text = String::from_utf8_lossy(request);
            assert!(text.starts_with("POST /api/v1/webhooks/shopify/orders-create HTTP/1.1\r\n"));
            let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
            assert!(head.contains(&format!("content-length: {}", body.len())));
            assert!(head.contains("x-shopify-hmac-sha256: "));
        }
        let ids: std::collections::HashSet<String> = requests
            .iter()
            .map(|r| {
                let text = String::from_utf8_lossy(r);
                let at = text.find("x-shopify-event-id: ").unwrap();
                text[at..].lines().next().unwrap().to_owned()
            })
            .collect();
        assert_eq!(ids.len(), 5, "every request has its own event id");
    }
}
