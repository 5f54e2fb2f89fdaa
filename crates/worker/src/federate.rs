//! Merging the Prometheus expositions of several workers into one, so that
//! the platform's `/metrics` shows every replica: each sample gets the
//! labels that name its source (e.g. `replica="emb-0"`), and each metric
//! family keeps one `# HELP` and `# TYPE` however many sources have it.

use std::collections::BTreeMap;

/// One source: its identifying labels and its exposition text.
pub struct Exposition<'a> {
    pub labels: &'a [(&'a str, &'a str)],
    pub text: &'a str,
}

/// The merged exposition: families in first-seen order, each with its
/// HELP and TYPE once and the samples of every source in source order.
pub fn merge(sources: &[Exposition<'_>]) -> String {
    struct Family {
        help: Option<String>,
        kind: Option<String>,
        samples: Vec<String>,
    }
    let mut order: Vec<String> = Vec::new();
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for src in sources {
        let extra = render_labels(src.labels);
        let mut current: Option<String> = None;
        for line in src.text.lines() {
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                let (tag, name, tail) = (parts.next(), parts.next(), parts.next());
                if let (Some(tag @ ("HELP" | "TYPE")), Some(name)) = (tag, name) {
                    let fam = families.entry(name.to_string()).or_insert_with(|| {
                        order.push(name.to_string());
                        Family {
                            help: None,
                            kind: None,
                            samples: Vec::new(),
                        }
                    });
                    let slot = if tag == "HELP" {
                        &mut fam.help
                    } else {
                        &mut fam.kind
                    };
                    if slot.is_none() {
                        *slot = Some(tail.unwrap_or("").to_string());
                    }
                    current = Some(name.to_string());
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let sample = add_labels(line, &extra);
            // A sample belongs to the family declared above it when its
            // name extends that family's (histograms: _bucket, _sum,
            // _count); otherwise to a family of its own name.
            let name = sample_name(line);
            let family = match &current {
                Some(f) if belongs(name, f) => f.clone(),
                _ => name.to_string(),
            };
            families
                .entry(family.clone())
                .or_insert_with(|| {
                    order.push(family.clone());
                    Family {
                        help: None,
                        kind: None,
                        samples: Vec::new(),
                    }
                })
                .samples
                .push(sample);
        }
    }
    let mut out = String::new();
    for name in order {
        let fam = &families[&name];
        if let Some(h) = &fam.help {
            out.push_str(&format!("# HELP {name} {h}\n"));
        }
        if let Some(t) = &fam.kind {
            out.push_str(&format!("# TYPE {name} {t}\n"));
        }
        for s in &fam.samples {
            out.push_str(s);
            out.push('\n');
        }
    }
    out
}

fn belongs(sample: &str, family: &str) -> bool {
    sample
        .strip_prefix(family)
        .is_some_and(|rest| ["", "_bucket", "_sum", "_count", "_total", "_created"].contains(&rest))
}

fn sample_name(line: &str) -> &str {
    let end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    &line[..end]
}

fn render_labels(labels: &[(&str, &str)]) -> String {
    labels
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `name{a="b"} 1` + `r="x"` → `name{a="b",r="x"} 1`.
fn add_labels(line: &str, extra: &str) -> String {
    if extra.is_empty() {
        return line.to_string();
    }
    let name = sample_name(line);
    let rest = &line[name.len()..];
    if let Some(inner) = rest.strip_prefix('{') {
        // Find the closing brace outside quoted values.
        let (mut quoted, mut escaped) = (false, false);
        for (i, c) in inner.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                '}' if !quoted => {
                    let labels = &inner[..i];
                    let sep = if labels.trim().is_empty() { "" } else { "," };
                    return format!("{name}{{{labels}{sep}{extra}}}{}", &inner[i + 1..]);
                }
                _ => {}
            }
        }
        line.to_string()
    } else {
        format!("{name}{{{extra}}}{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_families_once_and_labels_every_sample() {
        let a = "# HELP req Requests.\n# TYPE req counter\nreq{model=\"m\"} 3\n\
                 # HELP lat Latency.\n# TYPE lat histogram\nlat_bucket{le=\"0.1\"} 1\nlat_sum 0.05\nlat_count 1\n";
        let b =
            "# HELP req Requests.\n# TYPE req counter\nreq{model=\"m\",odd=\"a}b\"} 4\nreqs 1\n";
        let out = merge(&[
            Exposition {
                labels: &[("replica", "m-0")],
                text: a,
            },
            Exposition {
                labels: &[("replica", "m-1")],
                text: b,
            },
        ]);
        let want = "# HELP req Requests.\n# TYPE req counter\n\
                    req{model=\"m\",replica=\"m-0\"} 3\n\
                    req{model=\"m\",odd=\"a}b\",replica=\"m-1\"} 4\n\
                    # HELP lat Latency.\n# TYPE lat histogram\n\
                    lat_bucket{le=\"0.1\",replica=\"m-0\"} 1\nlat_sum{replica=\"m-0\"} 0.05\n\
                    lat_count{replica=\"m-0\"} 1\nreqs{replica=\"m-1\"} 1\n";
        assert_eq!(out, want);
    }
}
