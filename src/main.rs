//! The `poolside` command line: parse flags, load the layered configuration,
//! then run the proxy or print the configuration.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use poolside::config::{render_effective, Config, Loaded, LogFormat, Overrides};

const ENVIRONMENT_HELP: &str = "\
Environment:
  DEPLOYMENT_ENV    profile when --profile is not given: development|dev, staging, production|prod
                    (POOLSIDE_PROFILE, if set, is read first)
  REDIS_URL         upstream URL; or REDIS_HOST and REDIS_PORT
                    (REDIS_PORT=tcp://HOST:PORT, a Kubernetes service link, gives both)
  REDIS_PASSWORD    upstream password (REDIS_USERNAME for an ACL user)
  POOLSIDE_<KEY>    any configuration key, nested with __, e.g. POOLSIDE_POOL__MAX_CONNECTIONS=40
  RUST_LOG          log filter, default info

Layers, later wins: compiled-in profile defaults < profiles/<profile>.toml or --config
< environment < flags. `poolside config` shows where each value came from.";

#[derive(Parser)]
#[command(name = "poolside", version, about, after_help = ENVIRONMENT_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    flags: Flags,
}

#[derive(Subcommand, Clone, Copy)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Print the effective configuration as TOML: each value's source, secrets redacted.
    Config,
    /// Print a running poolside's /pool/status as a table; exit 1 when unhealthy, 2 when it does not answer.
    Status {
        /// Admin address to ask [default: admin_listen of the configuration]
        #[arg(long, value_name = "ADDR")]
        admin: Option<SocketAddr>,
    },
    /// Size a pool with the static formula: workers x 15 base + workers x 25 for high concurrency.
    Recommend {
        /// Application worker processes sharing this poolside
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        workers: u32,
        /// Concurrent users (requests in flight) across those workers
        #[arg(long, value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
        users: u32,
    },
}

#[derive(Args)]
struct Flags {
    /// development (dev), staging or production (prod) [default: DEPLOYMENT_ENV, else development]
    #[arg(long, global = true, value_name = "NAME")]
    profile: Option<String>,
    /// TOML file read instead of profiles/<profile>.toml [env: POOLSIDE_CONFIG]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Client listener [default: 127.0.0.1:6380]
    #[arg(long, global = true, value_name = "ADDR")]
    listen: Option<String>,
    /// Admin HTTP listener [default: 127.0.0.1:9180]
    #[arg(long, global = true, value_name = "ADDR")]
    admin_listen: Option<String>,
    /// Upstream Redis, redis://[user[:password]@]host[:port][/db] [default: redis://127.0.0.1:6379]
    #[arg(long, global = true, value_name = "URL")]
    upstream: Option<String>,
    /// Also accept clients on this unix socket
    #[arg(long, global = true, value_name = "PATH")]
    unix_socket: Option<PathBuf>,
    /// Log output format [default: text]
    #[arg(long, global = true, value_name = "FORMAT", value_parser = log_format_parser())]
    log_format: Option<LogFormat>,
    /// Runtime worker threads; 0: half the cores poolside may use, at least 1 [default: 1]
    #[arg(long, global = true, value_name = "N")]
    worker_threads: Option<usize>,
    /// How batches use upstream connections [default: multiplexed]
    #[arg(long, global = true, value_name = "MODE", value_parser = ["transaction", "multiplexed"])]
    pool_mode: Option<String>,
}

fn log_format_parser() -> impl TypedValueParser<Value = LogFormat> {
    PossibleValuesParser::new(["text", "json"]).map(|name| match name.as_str() {
        "json" => LogFormat::Json,
        _ => LogFormat::Text,
    })
}

impl Flags {
    fn into_overrides(self) -> Overrides {
        Overrides {
            profile: self.profile,
            config_file: self.config,
            listen: self.listen,
            admin_listen: self.admin_listen,
            upstream: self.upstream,
            unix_socket: self.unix_socket,
            log_format: self.log_format,
            worker_threads: self.worker_threads,
            pool_mode: self.pool_mode,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Loaded {
        config,
        figment,
        warnings,
    } = match Config::load_with_warnings(&cli.flags.into_overrides()) {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("poolside: {err}");
            return ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Run);
    // Logging starts only for `run`; the other commands print warnings as they are.
    if let Command::Run = command {
        poolside::logging::init(config.log_format);
        for warning in &warnings {
            tracing::warn!("configuration: {warning}");
        }
    } else {
        for warning in &warnings {
            eprintln!("poolside: warning: {warning}");
        }
    }
    match command {
        Command::Config => {
            // A closed stdout (`poolside config | head`) is not an error worth a panic.
            let _ = std::io::stdout().write_all(render_effective(&config, &figment).as_bytes());
            ExitCode::SUCCESS
        }
        Command::Status { admin } => {
            let configured = config.admin_listen.parse().ok();
            match admin.or(configured) {
                Some(addr) => ExitCode::from(poolside::report::status_command(addr)),
                None => {
                    eprintln!("poolside: give the admin address with --admin ADDR");
                    ExitCode::from(2)
                }
            }
        }
        Command::Recommend { workers, users } => {
            let text = poolside::report::recommend(workers, users);
            let _ = std::io::stdout().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Command::Run => match poolside::app::run(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("poolside: {err:#}");
                ExitCode::from(1)
            }
        },
    }
}
