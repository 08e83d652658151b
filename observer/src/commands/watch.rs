//! A live session (`capture`, `run`): capture into the pipeline until stopped, then the summary.
use std::{
    net::SocketAddr,
    process::ExitCode,
    sync::{
        Arc,
        mpsc::{Receiver, RecvTimeoutError},
    },
    time::Duration,
};

use anyhow::{Context, Result, bail};
use observer::{
    capture::{CaptureEvent, CaptureOptions, CaptureStats, LiveCapture, record::RecordWriter},
    config::OtlpExport,
    health::Report,
    llm::LlmStage,
    metrics::{self, Metrics},
    pipeline::Pipeline,
    serve,
    sink::{Sink, SummarySink},
    store,
};
use tokio::signal::unix::{SignalKind, signal};

/// What a live session watches and records.
pub struct Watch {
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    /// A command to start and trace; empty: watch until Ctrl-C or SIGTERM.
    pub command: Vec<String>,
    pub recorder: Option<RecordWriter>,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    /// The metrics' export over OTLP, if configured.
    pub otlp_metrics: Option<OtlpExport>,
    /// The web view over the store, if asked for.
    pub web: Option<WebView>,
}

/// `[serve]`: the store as pages and a JSON API, while it is written.
pub struct WebView {
    pub store: store::Store,
    pub access: serve::Access,
    pub listen: SocketAddr,
}

/// Captures until stopped, feeding `sinks`, then prints the summary.
pub fn watch_and_report(
    mut watch: Watch,
    llm: LlmStage,
    mut sinks: Vec<Box<dyn Sink>>,
) -> Result<ExitCode> {
    let options = CaptureOptions {
        pids: watch.pids.clone(),
        scoped: !watch.command.is_empty(),
        ..CaptureOptions::default()
    };
    let (capture, events) = LiveCapture::start(&options)?;

    let metrics = (watch.metrics_addr.is_some() || watch.otlp_metrics.is_some()).then(Metrics::new);
    if let Some(metrics) = &metrics {
        sinks.push(Box::new(metrics.clone()));
    }
    let otlp_metrics = match (&watch.otlp_metrics, &metrics) {
        (Some(export), Some(metrics)) => export.start_metrics(metrics.clone())?,
        _ => None,
    };
    let summary = SummarySink::default();
    sinks.push(Box::new(summary.clone()));
    let pipeline = Pipeline::new(llm, sinks)
        .wanting(watch.comms.clone())
        .recording(watch.recorder.take())
        .feeding_back(Box::new(capture.feedback_handler()));
    let pipeline = std::thread::Builder::new()
        .name("pipeline".into())
        .spawn(move || run_pipeline(events, pipeline))?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let code = runtime.block_on(watch_until_done(&mut watch, &capture, metrics.as_ref()))?;

    let stats = capture.stop();
    let report = pipeline
        .join()
        .map_err(|_| anyhow::anyhow!("the pipeline thread panicked"))?;
    // A last export of the metrics, final counts included.
    drop(otlp_metrics);
    report_the_end(&stats, &report, &summary);
    Ok(code)
}

async fn serve_metrics(addr: SocketAddr, metrics: &Arc<Metrics>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("serving metrics on {addr} (pick another --metrics-addr)"))?;
    eprintln!("metrics: http://{}/metrics", listener.local_addr()?);
    tokio::spawn(serve::serve(listener, metrics::router(metrics.clone())));
    Ok(())
}

/// Binds the web view, prints its address (with the token) and serves it in the background.
async fn serve_web_view(web: WebView) -> Result<()> {
    let server = serve::bind(web.store, web.access, web.listen).await?;
    eprintln!("web view: {}", server.url);
    tokio::spawn(async move {
        if let Err(error) = server.run().await {
            log::error!("the web view stopped: {error:#}");
        }
    });
    Ok(())
}

/// Serves the metrics, starts the command, if any, says it is ready, and waits for the command
/// to exit or for Ctrl-C or SIGTERM; the exit code is the command's.
async fn watch_until_done(
    watch: &mut Watch,
    capture: &LiveCapture,
    metrics: Option<&Arc<Metrics>>,
) -> Result<ExitCode> {
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    if let (Some(addr), Some(metrics)) = (watch.metrics_addr, metrics) {
        serve_metrics(addr, metrics).await?;
    }
    if let Some(web) = watch.web.take() {
        serve_web_view(web).await?;
    }
    let kernel_health = read_kernel_health(capture, metrics);
    tokio::pin!(kernel_health);
    let child = if watch.command.is_empty() {
        None
    } else {
        Some(spawn_traced(&watch.command, capture)?)
    };
    let stats = capture.stats();
    let held = if stats.gate.is_some() {
        "new programs held at exec until their probes are on"
    } else {
        "new programs not held at exec"
    };
    eprintln!(
        "ready: watching {}; {} processes followed, {held} (stop with Ctrl-C)",
        scope(watch),
        stats.follow.followed_now
    );
    let code = match child {
        Some(mut child) => tokio::select! {
            status = child.wait() => {
                let status = status?;
                ExitCode::from(status.code().map_or(1, |c| c as u8))
            }
            _ = sigint.recv() => ExitCode::SUCCESS,
            _ = sigterm.recv() => ExitCode::SUCCESS,
            () = &mut kernel_health => ExitCode::SUCCESS,
        },
        None => {
            tokio::select! {
                _ = sigint.recv() => {}
                _ = sigterm.recv() => {}
                () = &mut kernel_health => {}
            }
            ExitCode::SUCCESS
        }
    };
    Ok(code)
}

/// The kernel's counters, read into the metrics while the capture runs; never ends.
async fn read_kernel_health(capture: &LiveCapture, metrics: Option<&Arc<Metrics>>) {
    let Some(metrics) = metrics else {
        return std::future::pending().await;
    };
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        metrics.update_capture(&capture.stats());
    }
}

/// What the session watches, for the ready line.
fn scope(watch: &Watch) -> String {
    // The program's name only: its arguments may carry secrets (`--header "Authorization: …"`).
    if let Some(program) = watch.command.first() {
        format!("command `{program}` and its children")
    } else if !watch.pids.is_empty() {
        format!("pids {:?}", watch.pids)
    } else {
        "the whole host".to_string()
    }
}

fn run_pipeline(events: Receiver<CaptureEvent>, mut pipeline: Pipeline) -> Report {
    let mut last_ts = 0;
    loop {
        match events.recv_timeout(Duration::from_secs(1)) {
            Ok(event) => {
                last_ts = last_ts.max(event.ts());
                pipeline.on_event(event);
            }
            // A quiet host: time still passes for agent runs waiting to close.
            Err(RecvTimeoutError::Timeout) => pipeline.tick(store::now_unix_nanos()),
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    pipeline.finish(last_ts);
    pipeline.into_report()
}

/// Starts `command` followed from its first instruction.
fn spawn_traced(command: &[String], capture: &LiveCapture) -> Result<tokio::process::Child> {
    let Some((program, args)) = command.split_first() else {
        bail!("no command given")
    };
    capture
        .spawn_followed(program, args)
        .with_context(|| format!("starting `{program}`"))
}

/// The kernel's losses, the calls seen and what capturing cost.
fn report_the_end(stats: &CaptureStats, report: &Report, summary: &SummarySink) {
    let kernel = &stats.kernel;
    if kernel.events_lost > 0 || kernel.calls_truncated > 0 {
        log::warn!(
            "{} events ({} bytes) lost in the ring buffer, {} TLS calls truncated past 2 MiB",
            kernel.events_lost,
            kernel.bytes_lost,
            kernel.calls_truncated
        );
    }
    eprint!("{}", summary.summary().render(report));
    eprintln!("{}", capture_cost(stats));
}

/// What following processes cost, for the end of the summary.
fn capture_cost(stats: &CaptureStats) -> String {
    let (kernel, follow) = (&stats.kernel, &stats.follow);
    let mut text = format!(
        "capture cost: {} processes followed ({} stopped as costly without an LLM call, {} \
         followed again); {} probe links opened, each for one process ({} probes host-wide); {} \
         probed calls; not copied: {} on connections not followed, {} responses to non-LLM requests, \
         {} socket writes that were not HTTP, {} rustls calls on server sides, {} rustls records \
         lost (their session had not written since its keys changed); processes of agents not \
         followed: {} past the depth bound, {} with the map full",
        follow.followed_total,
        follow.dropped_costly,
        follow.readmitted,
        follow.links_opened,
        follow.host_wide_probes,
        kernel.probe_hits,
        kernel.skipped_connection,
        kernel.skipped_response,
        kernel.skipped_not_http,
        kernel.rustls_server_side,
        kernel.rustls_session_unknown,
        kernel.tree_depth_cut,
        kernel.tree_full,
    );
    let analyses = &follow.analyses;
    text.push_str(&format!(
        "; {} executables and libraries analysed ({} more found analysed, {} refused as too \
         costly to read), {} requests waited for an analysis, {} went on without one (their \
         user's queue was full)",
        analyses.read,
        analyses.cached,
        analyses.over_bound,
        follow.analysis_waits,
        follow.analyses_skipped
    ));
    if let Some(gate) = &stats.gate {
        let average = gate
            .total_hold_time
            .checked_div(u32::try_from(gate.holds).unwrap_or(u32::MAX).max(1))
            .unwrap_or_default();
        text.push_str(&format!(
            "; {} execs and TLS library opens held (average {:.2} ms, longest {:.1} ms, {} let \
             go at the bound)",
            gate.holds,
            average.as_secs_f64() * 1e3,
            gate.max_hold_time.as_secs_f64() * 1e3,
            gate.released_by_gate
        ));
    }
    text
}
