//! `neocloud apply | get | describe | delete | events | logs`: kubectl-like
//! commands against a running control plane's API, through
//! `neocloud_control::client`. This module only parses arguments and prints.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{Context, bail};
use neocloud_control::client::{self, Client, DEFAULT_SERVER};
use neocloud_control::{Kind, render};

/// The control plane to talk to.
#[derive(clap::Args, Clone)]
pub struct ServerArgs {
    /// The control plane's address.
    #[arg(long, env = "NEOCLOUD_SERVER", default_value = DEFAULT_SERVER)]
    server: String,
    /// The API key, when the server requires one.
    #[arg(long, env = "NEOCLOUD_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

impl ServerArgs {
    fn client(&self) -> Client {
        Client::new(&self.server).with_api_key(self.api_key.clone())
    }
}

#[derive(clap::Args)]
pub struct ApplyArgs {
    /// A manifest file, or a directory of `*.yaml`, `*.yml` and `*.json`
    /// files (multi-document YAML allowed), or `-` for stdin. Repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Yaml,
    Json,
}

#[derive(clap::Args)]
pub struct GetArgs {
    /// models, services or collections (also Service, svc, ...).
    kind: String,
    /// One object; all of the kind when absent.
    name: Option<String>,
    /// Print the objects instead of a table.
    #[arg(short = 'o', long = "output", value_enum)]
    output: Option<Output>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(clap::Args)]
pub struct DescribeArgs {
    kind: String,
    name: String,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(clap::Args)]
pub struct DeleteArgs {
    /// The kind, with NAME; or use -f.
    kind: Option<String>,
    name: Option<String>,
    /// Delete the objects a manifest file or directory declares.
    #[arg(short = 'f', long = "filename", conflicts_with_all = ["kind", "name"])]
    files: Vec<PathBuf>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(clap::Args)]
pub struct EventsArgs {
    /// Only events of this kind (and NAME).
    kind: Option<String>,
    name: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(clap::Args)]
pub struct LogsArgs {
    /// The service whose replicas' logs to print.
    service: String,
    /// Lines per replica.
    #[arg(long, default_value_t = 100)]
    tail: usize,
    #[command(flatten)]
    server: ServerArgs,
}

fn kind(text: &str) -> anyhow::Result<Kind> {
    Kind::parse(text)
        .with_context(|| format!("unknown kind {text:?}: use models, services or collections"))
}

/// Every document of the given files, in order.
fn manifests(files: &[PathBuf]) -> anyhow::Result<Vec<client::ManifestDocument>> {
    let mut docs = Vec::new();
    for file in files {
        if file.as_os_str() == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("reading stdin")?;
            docs.extend(client::parse_manifest("stdin", &text)?);
        } else {
            docs.extend(client::read_manifests(file)?);
        }
    }
    if docs.is_empty() {
        bail!("no resources found in {files:?}");
    }
    Ok(docs)
}

/// `service/embed`, from a document, or its origin when it has no kind
/// or name.
fn label(doc: &client::ManifestDocument) -> anyhow::Result<(Kind, String)> {
    let kind = client::document_kind(&doc.value).with_context(|| doc.origin.clone())?;
    let name = client::document_name(&doc.value).with_context(|| doc.origin.clone())?;
    Ok((kind, name.to_string()))
}

pub fn apply(args: ApplyArgs) -> anyhow::Result<()> {
    let client = args.server.client();
    let mut failed = 0;
    for doc in manifests(&args.files)? {
        let result = label(&doc).and_then(|(kind, name)| {
            let (_, outcome) = client
                .apply(&doc.value)
                .with_context(|| format!("{}: {}/{name}", doc.origin, kind.singular()))?;
            println!("{}/{name} {}", kind.singular(), outcome.as_str());
            Ok(())
        });
        if let Err(e) = result {
            eprintln!("error: {e:#}");
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("{failed} document(s) were not applied");
    }
    Ok(())
}

pub fn get(args: GetArgs) -> anyhow::Result<()> {
    let client = args.server.client();
    let kind = kind(&args.kind)?;
    let value = match &args.name {
        Some(name) => {
            let object = client.get(kind, name)?;
            if args.output.is_none() {
                print!(
                    "{}",
                    render::objects_table(kind, &[object], SystemTime::now())
                );
                return Ok(());
            }
            object.to_value()
        }
        None => {
            let list = client.list_value(kind)?;
            if args.output.is_none() {
                let objects =
                    serde_json::from_value::<Vec<neocloud_control::Object>>(list["items"].clone())
                        .context("the server's list")?;
                if objects.is_empty() {
                    eprintln!("No {} found.", kind.plural());
                } else {
                    print!(
                        "{}",
                        render::objects_table(kind, &objects, SystemTime::now())
                    );
                }
                return Ok(());
            }
            list
        }
    };
    match args.output {
        Some(Output::Json) => println!("{}", serde_json::to_string_pretty(&value)?),
        _ => print!("{}", serde_norway::to_string(&value)?),
    }
    Ok(())
}

pub fn describe(args: DescribeArgs) -> anyhow::Result<()> {
    let client = args.server.client();
    let kind = kind(&args.kind)?;
    let object = client.get(kind, &args.name)?;
    let events = client.events(Some(kind), Some(&args.name))?;
    print!("{}", render::describe(&object, &events, SystemTime::now()));
    Ok(())
}

pub fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let client = args.server.client();
    let targets: Vec<(Kind, String)> = if args.files.is_empty() {
        match (&args.kind, &args.name) {
            (Some(k), Some(name)) => vec![(kind(k)?, name.clone())],
            _ => bail!("say what to delete: `delete KIND NAME` or `delete -f FILE`"),
        }
    } else {
        manifests(&args.files)?
            .iter()
            .map(label)
            .collect::<anyhow::Result<_>>()?
    };
    let mut failed = 0;
    for (kind, name) in targets {
        match client.delete(kind, &name) {
            Ok(_) => println!("{}/{name} deleted", kind.singular()),
            Err(e) => {
                eprintln!("error: {}/{name}: {e}", kind.singular());
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} object(s) were not deleted");
    }
    Ok(())
}

pub fn events(args: EventsArgs) -> anyhow::Result<()> {
    let client = args.server.client();
    let kind = args.kind.as_deref().map(kind).transpose()?;
    let events = client.events(kind, args.name.as_deref())?;
    if events.is_empty() {
        eprintln!("No events found.");
    } else {
        print!("{}", render::events_table(&events, SystemTime::now()));
    }
    Ok(())
}

pub fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let text = args.server.client().logs(&args.service, Some(args.tail))?;
    print!("{text}");
    Ok(())
}
