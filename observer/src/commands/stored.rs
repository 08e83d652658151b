//! The commands that read the store: `traces`, `show` and `serve`.
use std::{io::IsTerminal, process::ExitCode};

use anyhow::{Result, bail};
use observer::{
    query::{
        Filter, Query,
        render::{self, Style},
        tree::{self, AttributeSelection},
    },
    serve::{self as web, Access},
    store::Store,
};

use crate::cli::{ListFormat, ServeArgs, ShowArgs, TracesArgs};

pub fn traces(args: TracesArgs) -> Result<ExitCode> {
    let store = Store::open_existing(&args.db.db)?;
    let query = Query {
        filters: args
            .filters
            .chunks(3)
            .map(|f| Filter::new(&f[0], &f[1], &f[2]))
            .collect::<Result<_>>()?,
        since: args.since,
        limit: args.limit,
        offset: args.offset,
        order_by: args.order_by,
        before: None,
    };
    let output = match (args.spans, args.format) {
        (false, ListFormat::Table) => render::traces_table(&store.traces(&query)?),
        (true, ListFormat::Table) => render::spans_table(&store.spans(&query)?),
        (false, ListFormat::Json) => {
            pretty_json(&serde_json::json!({ "traces": store.traces(&query)? }))
        }
        (true, ListFormat::Json) => {
            let spans: Vec<_> = store
                .spans(&query)?
                .iter()
                .map(|span| tree::span_json(span, &AttributeSelection::All))
                .collect();
            pretty_json(&serde_json::json!({ "spans": spans }))
        }
    };
    print!("{output}");
    Ok(ExitCode::SUCCESS)
}

fn pretty_json(value: &serde_json::Value) -> String {
    format!("{value:#}\n")
}

pub fn show(args: ShowArgs) -> Result<ExitCode> {
    let store = Store::open_existing(&args.db.db)?;
    let spans = store.trace_spans(&args.trace_id)?;
    if spans.is_empty() {
        bail!(
            "no trace {} in {}; `observer traces` lists the stored ones",
            args.trace_id,
            args.db.db.display()
        );
    }
    let style = Style {
        color: std::io::stdout().is_terminal(),
    };
    print!(
        "{}",
        render::trace_tree(&args.trace_id, &tree::build_forest(spans), style)
    );
    Ok(ExitCode::SUCCESS)
}

pub fn serve(args: ServeArgs) -> Result<ExitCode> {
    let access = Access::choose(&args.listen, args.auth_token, args.no_auth)?;
    let store = Store::open_existing(&args.db.db)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let server = web::bind(store, access, args.listen).await?;
        eprintln!(
            "serving {} at {} (stop with Ctrl-C)",
            args.db.db.display(),
            server.url
        );
        server.run().await
    })?;
    Ok(ExitCode::SUCCESS)
}
