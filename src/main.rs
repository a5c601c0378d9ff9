//! The `streamcast` command line. The only place `anyhow` lives: every library error is typed,
//! and here each one is turned into a message and an exit code (0 ok, 2 usage or config, 1 runtime).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use streamcast::bundle::{self, Bundle};
use streamcast::config::{Config, ConfigError, ExecutionProviderChoice};
use streamcast::demo::{self, DemoOptions};
use streamcast::inference::{Model, SessionOptions};
use streamcast::serve::{self, RunError};
use streamcast::telemetry;
use streamcast::window::{DuplicatePolicy, EventTimePolicy, GapPolicy};

#[derive(Parser)]
#[command(name = "streamcast", version, about = "Serve time-series ONNX models on Kafka.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the worker: the inference consumer group and the HTTP server.
    Run(RunArgs),
    /// The embedded default: an in-process broker, a shipped model and the replayed CO2 series.
    Demo(DemoArgs),
    /// Send a CSV or JSONL file of observations (and optionally delayed actuals) to Kafka.
    Produce(ProduceArgs),
    /// Batch prediction over a CSV, Parquet or JSONL file with a bundle, no Kafka.
    Predict(PredictArgs),
    /// Work with model bundles.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Manage the contract's topics.
    #[command(subcommand)]
    Topics(TopicsCommand),
}

#[derive(Args)]
struct RunArgs {
    /// Config file (TOML). Environment overrides: STREAMCAST_<SECTION>__<KEY>, STREAMCAST_BOOTSTRAP_SERVERS.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Print the effective config (secrets redacted) and exit.
    #[arg(long)]
    print_config: bool,
    /// What to run: the worker and monitor (`all`), or one of them.
    #[arg(long, value_enum, default_value = "all")]
    role: serve::Role,
    /// Create missing topics before starting, with this many partitions.
    #[arg(long, value_name = "PARTITIONS")]
    create_topics: Option<i32>,
}

#[derive(Args)]
struct DemoArgs {
    /// Stop after this many seconds at most.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Number of series replayed (each a different stretch of the CO2 record).
    #[arg(long, default_value_t = 8)]
    series: usize,
    /// Observations per series.
    #[arg(long, default_value_t = 500)]
    events_per_series: usize,
    /// Events per second produced (paced, like a live stream).
    #[arg(long, default_value_t = 400.0)]
    rate: f64,
    /// Model root.
    #[arg(long, default_value = "models")]
    models: PathBuf,
    /// Bundle name.
    #[arg(long, default_value = "co2-mlp")]
    model: String,
    /// `auto`, `cpu` or `cuda`.
    #[arg(long, default_value = "auto")]
    execution_provider: String,
    /// The CSV replayed (timestamp plus the bundle's features).
    #[arg(long, default_value = "data/co2_weekly.csv")]
    data: PathBuf,
}

#[derive(Args)]
struct ProduceArgs {
    /// JSONL of InputEvents (sent unchanged), or CSV or Parquet (`.parquet`) with `timestamp`,
    /// optional `id` and `series_id`, and feature columns.
    input: PathBuf,
    /// Take `[kafka]` and `[topics]` from this config file.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Used when no config file is given.
    #[arg(long, env = "STREAMCAST_BOOTSTRAP_SERVERS", default_value = "localhost:9092")]
    bootstrap_servers: String,
    /// Input topic (default: the config's, else `input_data`).
    #[arg(long)]
    topic: Option<String>,
    /// Actuals topic (default: the config's, else `actuals`).
    #[arg(long)]
    actuals_topic: Option<String>,
    /// Events per second; 0 sends as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Series id for rows of a table without a `series_id` column.
    #[arg(long, default_value = streamcast::table::DEFAULT_SERIES)]
    series: String,
    /// Prefix of generated event ids (`<prefix>-<row>`, for a table without an `id` column).
    #[arg(long, default_value = "obs")]
    id_prefix: String,
    /// Feature column whose next value in the same series is sent as the actual of each row.
    #[arg(long)]
    actuals_column: Option<String>,
    /// Seconds between the next row being sent and its predecessor's actual.
    #[arg(long, default_value_t = 0.0)]
    actuals_delay: f64,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct PredictArgs {
    /// Input: JSONL of InputEvents, or CSV or Parquet (`.parquet`) with `timestamp`, optional `id`
    /// and `series_id`, and one column per bundle feature. Parquet timestamps are strings or
    /// timestamp columns; Snappy, gzip, LZ4 or uncompressed.
    input: PathBuf,
    /// Output file (`.csv` for CSV, else JSONL; not Parquet); standard output (JSONL) when absent.
    #[arg(long, short)]
    output: Option<PathBuf>,
    #[arg(long, default_value = "models")]
    models: PathBuf,
    #[arg(long, default_value = "co2-mlp")]
    model: String,
    #[arg(long, default_value = "latest")]
    version: String,
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Most series whose window state is held (least recently seen evicted first).
    #[arg(long, default_value_t = 100_000)]
    max_series: usize,
    /// Event-time windows (bundles with a `frequency`): a second observation of a step is
    /// `keep_first` or `replace`d, as `windows.duplicates` in the worker's config.
    #[arg(long, default_value = "keep_first", value_parser = ["keep_first", "replace"])]
    duplicates: String,
    /// Event-time windows: missing steps `reset` the window, or are filled (`carry_forward`,
    /// `linear`) up to --max-fill-steps, as `windows.gaps`.
    #[arg(long, default_value = "reset", value_parser = ["reset", "carry_forward", "linear"])]
    gaps: String,
    /// Event-time windows: the longest gap, in steps, that is filled.
    #[arg(long, default_value_t = 3)]
    max_fill_steps: usize,
    /// `auto`, `cpu` or `cuda`.
    #[arg(long, default_value = "cpu")]
    execution_provider: String,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// List bundles and their versions under a model root.
    List {
        #[arg(long, default_value = "models")]
        root: PathBuf,
    },
    /// Show a bundle's manifest summary.
    Inspect(ModelRefArgs),
    /// Fully validate a bundle: manifest, checksum, ONNX signature, golden cases, and a full batch.
    Validate(ValidateArgs),
    /// Make a bundle from an ONNX file, its scaler as JSON and a reference CSV, then validate it.
    ///
    /// The new version is staged, validated like `models validate`, and only then moved to
    /// ROOT/NAME/VERSION. Pass `--golden` with predictions from the training framework so that
    /// an export that changed the numbers is refused.
    Build(BuildArgs),
    /// Promote the configured A/B candidate to primary on every replica (operator decision).
    ///
    /// Publishes a `model_promoted` alert; each worker's decision follower applies it between two
    /// batches. It lasts until the workers are configured with another candidate: pin
    /// `model.version` to the candidate to make it permanent.
    Promote(DecisionArgs),
    /// Roll the configured A/B candidate back on every replica (operator decision).
    Rollback(DecisionArgs),
    /// Compare CUDA with CPU on every bundle (predictions within 1e-4) and time batch sizes on both.
    ///
    /// Needs the CUDA build of ONNX Runtime: `make gpu-check` installs it and runs this.
    GpuCheck(GpuCheckArgs),
}

#[derive(Args)]
struct GpuCheckArgs {
    #[arg(long, default_value = "models")]
    root: PathBuf,
    /// Batch sizes timed and compared.
    #[arg(long, value_delimiter = ',', default_values_t = streamcast::gpu_check::DEFAULT_BATCH_SIZES)]
    batch_sizes: Vec<usize>,
    /// Timed runs per batch size and provider (the median is reported).
    #[arg(long, default_value_t = 15)]
    repeats: usize,
    /// ONNX Runtime intra-op threads per session (the worker's `model.intra_threads`).
    #[arg(long, default_value_t = 1)]
    intra_threads: usize,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct ValidateArgs {
    #[command(flatten)]
    model: ModelRefArgs,
    /// Also score one batch of this many windows, the worker's `batching.max_batch_size`
    /// (a model exported with a fixed batch axis fails here, not at start-up).
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
}

#[derive(Args)]
struct BuildArgs {
    /// The exported model: one float32 input, [N, T*F] or [N, T, F], and one output [N, H].
    #[arg(long)]
    onnx: PathBuf,
    /// The input scaler as JSON: {"kind": "standard", "mean": [..], "std": [..]} or
    /// {"kind": "minmax", "min": [..], "max": [..]}, one value per feature.
    #[arg(long)]
    scaler: PathBuf,
    /// The target scaler in the same form (1 or H columns); default: the input scaler's column
    /// for the target feature.
    #[arg(long)]
    target_scaler: Option<PathBuf>,
    /// Training rows of one series in time order, with a header: a column per feature. Gives the
    /// drift reference and the windows for reference predictions.
    #[arg(long)]
    reference: PathBuf,
    /// Golden cases from the training framework, JSON Lines of {"window": [[..]], "prediction": [..]}.
    /// Without it they are computed with ONNX Runtime from the reference windows.
    #[arg(long)]
    golden: Option<PathBuf>,
    #[arg(long)]
    name: String,
    /// Default: one more than the highest numeric version under ROOT/NAME.
    #[arg(long)]
    version: Option<String>,
    #[arg(long, default_value = "models")]
    root: PathBuf,
    /// Feature columns in model order (comma-separated). Default: every reference column except
    /// timestamp, series_id and id.
    #[arg(long, value_delimiter = ',')]
    features: Option<Vec<String>>,
    /// The predicted feature. Default: the first feature.
    #[arg(long)]
    target: Option<String>,
    /// Observations per model input (T).
    #[arg(long)]
    window: usize,
    /// Values per prediction. Default: the model's declared output width.
    #[arg(long)]
    horizon: Option<usize>,
    /// `flat` ([N, T*F], time-major) or `sequence` ([N, T, F]). Default: from the input's rank.
    #[arg(long, value_parser = parse_layout)]
    layout: Option<streamcast::bundle::Layout>,
    /// The series' step ("7d", "1h"), for event-time windows.
    #[arg(long, value_parser = humantime_duration)]
    frequency: Option<std::time::Duration>,
    /// Golden cases computed with ONNX Runtime when --golden is not given.
    #[arg(long, default_value_t = 5)]
    golden_count: usize,
    /// The batch validated before publishing (the worker's `batching.max_batch_size`).
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
}

fn parse_layout(s: &str) -> Result<streamcast::bundle::Layout, String> {
    match s {
        "flat" => Ok(streamcast::bundle::Layout::Flat),
        "sequence" => Ok(streamcast::bundle::Layout::Sequence),
        other => Err(format!("`{other}` is not a layout: flat or sequence")),
    }
}

fn humantime_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime_serde::re::humantime::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Args)]
struct DecisionArgs {
    /// The workers' config file (topics, model name and `[variants.candidate]`).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Why, recorded in the alert's details.
    #[arg(long, default_value = "operator decision")]
    reason: String,
}

#[derive(Args)]
struct ModelRefArgs {
    /// Bundle name, or a path to a bundle directory.
    name: String,
    /// Version (`latest` resolves to the highest).
    #[arg(default_value = "latest")]
    version: String,
    #[arg(long, default_value = "models")]
    root: PathBuf,
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// Create every topic of the contract (existing ones are left alone).
    Create {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long, default_value_t = 6)]
        partitions: i32,
        #[arg(long, default_value_t = 1)]
        replication_factor: i32,
    },
}

/// An error that maps to exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

/// The loaded config, once there is one: errors are printed with its secrets redacted.
static LOADED: std::sync::OnceLock<Config> = std::sync::OnceLock::new();

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let text = format!("{error:#}");
            eprintln!("error: {}", LOADED.get().map_or_else(|| text.clone(), |c| c.redact(&text)));
            if is_usage_error(&error) {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn is_usage_error(error: &anyhow::Error) -> bool {
    error.chain().any(|e| {
        e.is::<ConfigError>()
            || e.is::<UsageError>()
            || e.is::<bundle::BundleError>()
            || e.downcast_ref::<streamcast::builder::BuildError>()
                .is_some_and(|e| !matches!(e, streamcast::builder::BuildError::Write { .. }))
            || e.downcast_ref::<RunError>().is_some_and(RunError::is_setup_error)
            || e.downcast_ref::<streamcast::inference::InferenceError>().is_some_and(|e| {
                matches!(
                    e,
                    streamcast::inference::InferenceError::Bundle(_)
                        | streamcast::inference::InferenceError::Cuda(_)
                        | streamcast::inference::InferenceError::Runtime(_)
                )
            })
    })
}

fn decide(args: DecisionArgs, verdict: streamcast::decisions::Decision) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref(), std::env::vars())?;
    let Some(candidate) = &config.variants.candidate else {
        return Err(UsageError("the config has no [variants.candidate] to promote or roll back".into()).into());
    };
    let alert = streamcast::decisions::publish_operator_decision(&config, verdict, &candidate.version, &args.reason)?;
    println!(
        "published {} for {} candidate version {} (primary {}) to {}",
        alert.kind().as_str(),
        alert.model.name,
        alert.model.version,
        config.model.version,
        config.topics.alerts
    );
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => {
            let config = Config::load(args.config.as_deref(), std::env::vars())?;
            let _ = LOADED.set(config.clone());
            if args.print_config {
                print!("{}", config.to_redacted_toml());
                return Ok(());
            }
            telemetry::init_logging(&config.telemetry);
            let rt = runtime()?;
            let result = rt.block_on(async {
                if let Some(partitions) = args.create_topics {
                    let client = streamcast::kafka::producer_side_config(&config);
                    let created =
                        streamcast::topics::create_topics(&client, &config.topics.all(), partitions, 1).await?;
                    tracing::info!(?created, "Topics created.");
                }
                serve::run(&config, args.role).await?;
                anyhow::Ok(())
            });
            // Dropping a runtime waits for its blocking tasks without limit; a shutdown that
            // timed out left one behind on purpose.
            rt.shutdown_timeout(std::time::Duration::from_millis(500));
            result
        }
        Command::Demo(args) => {
            let provider = parse_provider(&args.execution_provider)?;
            let options = DemoOptions {
                duration: std::time::Duration::from_secs(args.duration),
                series: args.series,
                events_per_series: args.events_per_series,
                rate: args.rate,
                models: args.models,
                model: args.model,
                execution_provider: provider,
                data: args.data,
            };
            let rt = runtime()?;
            let summary = rt.block_on(demo::run(options))?;
            println!("{summary}");
            Ok(())
        }
        Command::Predict(args) => predict(args),
        Command::Produce(args) => produce(args),
        Command::Models(cmd) => models(cmd),
        Command::Topics(TopicsCommand::Create { config, partitions, replication_factor }) => {
            let config = Config::load(config.as_deref(), std::env::vars())?;
            let client = streamcast::kafka::producer_side_config(&config);
            let rt = runtime()?;
            let created = rt.block_on(streamcast::topics::create_topics(
                &client,
                &config.topics.all(),
                partitions,
                replication_factor,
            ))?;
            if created.is_empty() {
                println!("All topics already exist.");
            } else {
                println!("Created: {}", created.join(", "));
            }
            Ok(())
        }
    }
}

fn parse_provider(s: &str) -> anyhow::Result<ExecutionProviderChoice> {
    match s {
        "auto" => Ok(ExecutionProviderChoice::Auto),
        "cpu" => Ok(ExecutionProviderChoice::Cpu),
        "cuda" => Ok(ExecutionProviderChoice::Cuda),
        other => Err(UsageError(format!("--execution-provider must be auto, cpu or cuda, not `{other}`")).into()),
    }
}

fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    if !(args.rate >= 0.0 && args.actuals_delay >= 0.0 && args.actuals_delay.is_finite()) {
        return Err(UsageError("--rate and --actuals-delay must be non-negative".into()).into());
    }
    let (client, topics) = match &args.config {
        Some(path) => {
            let config = Config::load(Some(path), std::env::vars())?;
            (streamcast::kafka::producer_side_config(&config), config.topics)
        }
        None => {
            let mut c = rdkafka::config::ClientConfig::new();
            c.set("bootstrap.servers", &args.bootstrap_servers);
            (c, Default::default())
        }
    };
    let topic = args.topic.clone().unwrap_or(topics.input);
    let actuals_topic = args.actuals_topic.clone().unwrap_or(topics.actuals);
    let opts = streamcast::produce::ProduceOptions {
        input: &args.input,
        topic: &topic,
        actuals_topic: &actuals_topic,
        rate: args.rate,
        series: &args.series,
        id_prefix: &args.id_prefix,
        actuals_column: args.actuals_column.as_deref(),
        actuals_delay: std::time::Duration::from_secs_f64(args.actuals_delay),
        progress: !args.quiet,
    };
    let s = streamcast::produce::run(&client, &opts)?;
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "sent {} events to `{topic}` and {} actuals to `{actuals_topic}` in {secs:.2} s ({:.0} events/s); {} failed deliveries",
        s.events,
        s.actuals,
        s.events as f64 / secs,
        s.failed
    );
    if s.failed > 0 {
        anyhow::bail!("{} records were not delivered", s.failed);
    }
    Ok(())
}

fn predict(args: PredictArgs) -> anyhow::Result<()> {
    if args.batch_size == 0 {
        return Err(UsageError("--batch-size must be at least 1".into()).into());
    }
    let provider = parse_provider(&args.execution_provider)?;
    let dir = bundle::resolve(&args.models, &args.model, &args.version)?;
    let mut model = Model::load(Bundle::load(&dir)?, SessionOptions { provider, intra_threads: 1 })?;
    let opts = streamcast::batch::BatchOptions {
        input: &args.input,
        output: args.output.as_deref(),
        batch_size: args.batch_size,
        max_series: args.max_series.max(1),
        policy: EventTimePolicy {
            duplicates: if args.duplicates == "replace" {
                DuplicatePolicy::Replace
            } else {
                DuplicatePolicy::KeepFirst
            },
            gaps: match args.gaps.as_str() {
                "carry_forward" => GapPolicy::CarryForward,
                "linear" => GapPolicy::Linear,
                _ => GapPolicy::Reset,
            },
            max_fill_steps: args.max_fill_steps,
            // A file has no clock to be ahead of.
            max_future: None,
        },
        progress: !args.quiet,
    };
    let summary = streamcast::batch::run(&mut model, &opts)?;
    eprintln!(
        "predicted {} of {} events with {} version {} ({} during window warm-up); {} rejected",
        summary.predicted,
        summary.events,
        model.model_ref().name,
        model.model_ref().version,
        summary.warmup,
        summary.rejected.len()
    );
    for (line, reason) in summary.rejected.iter().take(20) {
        eprintln!("  line {line}: {reason}");
    }
    if summary.rejected.len() > 20 {
        eprintln!("  ... and {} more", summary.rejected.len() - 20);
    }
    Ok(())
}

fn gpu_check(args: GpuCheckArgs) -> anyhow::Result<()> {
    if args.batch_sizes.is_empty() || args.batch_sizes.contains(&0) || args.repeats == 0 || args.intra_threads == 0 {
        return Err(UsageError("--batch-sizes, --repeats and --intra-threads must be at least 1".into()).into());
    }
    let options = streamcast::gpu_check::GpuCheckOptions {
        root: args.root,
        batch_sizes: args.batch_sizes,
        repeats: args.repeats,
        intra_threads: args.intra_threads,
    };
    let report = streamcast::gpu_check::run(&options, |dir| eprintln!("checking {} ...", dir.display()))?;
    print!("{report}");
    if let Some(path) = &args.json {
        report.write_json(path)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(report.verdict()?)
}

fn bundle_dir(args: &ModelRefArgs) -> anyhow::Result<PathBuf> {
    let as_path = PathBuf::from(&args.name);
    if as_path.join("bundle.json").is_file() {
        return Ok(as_path);
    }
    Ok(bundle::resolve(&args.root, &args.name, &args.version)?)
}

fn models(cmd: ModelsCommand) -> anyhow::Result<()> {
    match cmd {
        ModelsCommand::List { root } => {
            for name in bundle::list_models(&root)? {
                let versions = bundle::list_versions(&root, &name)?;
                let latest = versions.last().cloned().unwrap_or_default();
                println!("{name}: versions {} (latest {latest})", versions.join(", "));
            }
            Ok(())
        }
        ModelsCommand::Inspect(args) => {
            let dir = bundle_dir(&args)?;
            let b = Bundle::load(&dir)?;
            let m = &b.manifest;
            println!("bundle:     {}", dir.display());
            println!("model:      {} version {}", m.name, m.version);
            println!("features:   {}", m.features.join(", "));
            println!("window:     {} steps, layout {:?}, input `{}`", m.window, m.input.layout, m.input.name);
            println!("horizon:    {} (output `{}`, target `{}`)", m.horizon, m.output.name, m.target.name);
            if let Some(q) = &m.quantiles {
                println!("quantiles:  {q:?} (output [N, {}, {}]; 0.5 is the point forecast)", m.horizon, q.len());
            }
            if let Some(f) = m.frequency {
                println!("frequency:  {f:?} (event-time windows)");
            }
            if let Some(v) = &m.validation {
                println!("validation: rmse {:.4}, mae {:.4}", v.rmse, v.mae);
            }
            println!(
                "reference:  {} features, {} predictions",
                m.reference.features.len(),
                m.reference.predictions.len()
            );
            println!("golden:     {} cases", m.golden.len());
            Ok(())
        }
        ModelsCommand::Promote(args) => decide(args, streamcast::decisions::Decision::Promote),
        ModelsCommand::Rollback(args) => decide(args, streamcast::decisions::Decision::Rollback),
        ModelsCommand::GpuCheck(args) => gpu_check(args),
        ModelsCommand::Validate(args) => {
            let dir = bundle_dir(&args.model)?;
            let b = Bundle::load(&dir)?;
            let golden = b.manifest.golden.len();
            let checksum = if b.manifest.model_sha256.is_some() { "checksum matches, " } else { "no checksum, " };
            let mut model = Model::load(b, SessionOptions::default())?;
            model.check_batch(args.batch_size.max(1))?;
            println!(
                "ok: {} version {} ({checksum}{golden} golden cases match within 1e-4, alone and in a batch of {})",
                model.model_ref().name,
                model.model_ref().version,
                args.batch_size.max(1)
            );
            Ok(())
        }
        ModelsCommand::Build(a) => {
            let built = streamcast::builder::build(&streamcast::builder::BuildOptions {
                onnx: a.onnx,
                scaler: a.scaler,
                target_scaler: a.target_scaler,
                reference: a.reference,
                golden: a.golden,
                root: a.root,
                name: a.name,
                version: a.version,
                features: a.features,
                target: a.target,
                window: a.window,
                horizon: a.horizon,
                layout: a.layout,
                frequency: a.frequency,
                golden_count: a.golden_count,
                batch_size: a.batch_size.max(1),
            })?;
            if !built.framework_golden {
                eprintln!(
                    "note: the {} golden cases were computed by ONNX Runtime from this export: they guard later \
                     changes, not the export itself. Pass --golden with your framework's own predictions.",
                    built.golden
                );
            }
            println!(
                "ok: wrote {} ({} golden cases, reference from {} windows; validated with a batch of {})",
                built.dir.display(),
                built.golden,
                built.reference_windows,
                a.batch_size.max(1)
            );
            Ok(())
        }
    }
}
