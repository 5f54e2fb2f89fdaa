//! Collections: create, list, inspect, delete.

use super::*;

pub(crate) async fn root() -> axum::Json<Value> {
    axum::Json(json!({
        "title": "neocloud vector store (Qdrant-compatible)",
        "version": QDRANT_API_VERSION,
        "neocloud_version": env!("CARGO_PKG_VERSION"),
    }))
}

pub(crate) async fn list_collections(State(state): State<VectorState>) -> Reply {
    blocking(move || {
        let names: Vec<Value> = state
            .store
            .names()
            .into_iter()
            .map(|n| json!({"name": n}))
            .collect();
        Ok(json!({"collections": names}))
    })
    .await
}

#[derive(Deserialize)]
pub(crate) struct VectorParams {
    size: usize,
    distance: DistanceName,
}

/// Qdrant spells distances `Cosine`, `Dot`, `Euclid` (and `Manhattan`,
/// which we refuse by name).
#[derive(Deserialize)]
pub(crate) enum DistanceName {
    Cosine,
    Dot,
    Euclid,
    Manhattan,
}

#[derive(Deserialize, Default)]
pub(crate) struct HnswDiff {
    m: Option<usize>,
    ef_construct: Option<usize>,
}

#[derive(Deserialize)]
pub(crate) struct CreateCollection {
    vectors: VectorParams,
    #[serde(default)]
    hnsw_config: Option<HnswDiff>,
    /// neocloud: the embedding service that turns this collection's text
    /// into vectors.
    #[serde(default)]
    embed: Option<String>,
    #[serde(default)]
    quantization_config: Option<Value>,
}

/// Qdrant's `quantization_config`: `{"scalar": {"type": "int8",
/// "quantile"?, "always_ram"?}}` is supported; product and binary
/// quantization are refused by name.
fn quantization_of(v: Option<Value>) -> Result<Option<ScalarQuantization>, VectorError> {
    let v = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v,
    };
    let Some(o) = v.as_object() else {
        return Err(VectorError::bad(format!(
            "quantization_config: expected an object like {{\"scalar\": {{\"type\": \"int8\"}}}}, got {v}"
        )));
    };
    if let Some(kind) = ["product", "binary"].iter().find(|k| o.contains_key(**k)) {
        return Err(VectorError::bad(format!(
            "quantization_config.{kind}: only scalar int8 quantization is supported"
        )));
    }
    let Some(scalar) = o.get("scalar") else {
        return Err(VectorError::bad(
            "quantization_config: expected a \"scalar\" entry",
        ));
    };
    match scalar.get("type").and_then(Value::as_str) {
        Some("int8") => {}
        other => {
            return Err(VectorError::bad(format!(
                "quantization_config.scalar.type: only \"int8\" is supported, got {}",
                other.map_or("nothing".to_string(), |t| format!("{t:?}"))
            )));
        }
    }
    let mut scalar = scalar.clone();
    scalar.as_object_mut().map(|m| m.remove("type"));
    let q: ScalarQuantization = serde_json::from_value(scalar)
        .map_err(|e| VectorError::bad(format!("quantization_config.scalar: {e}")))?;
    q.validate()?;
    Ok(Some(q))
}

pub(crate) async fn create_collection(
    State(state): State<VectorState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    blocking(move || {
        let req: CreateCollection = parse(body)?;
        let distance = match req.vectors.distance {
            DistanceName::Cosine => Distance::Cosine,
            DistanceName::Dot => Distance::Dot,
            DistanceName::Euclid => Distance::Euclid,
            DistanceName::Manhattan => {
                return Err(VectorError::bad(
                    "vectors.distance: Manhattan is not supported; use Cosine, Dot or Euclid",
                ));
            }
        };
        let quantization = quantization_of(req.quantization_config)?;
        let defaults = HnswParams::default();
        let hnsw = req.hnsw_config.unwrap_or_default();
        state.store.create(
            &name,
            CollectionConfig {
                dim: req.vectors.size,
                distance,
                hnsw: HnswParams {
                    m: hnsw.m.unwrap_or(defaults.m),
                    ef_construct: hnsw.ef_construct.unwrap_or(defaults.ef_construct),
                },
                embed: req.embed,
                quantization,
            },
        )?;
        Ok(json!(true))
    })
    .await
}

pub(crate) async fn delete_collection(
    State(state): State<VectorState>,
    Path(name): Path<String>,
) -> Reply {
    blocking(move || Ok(json!(state.store.delete(&name)?))).await
}

pub(crate) async fn collection_exists(
    State(state): State<VectorState>,
    Path(name): Path<String>,
) -> Reply {
    blocking(move || Ok(json!({"exists": state.store.get(&name).is_ok()}))).await
}

pub(crate) fn distance_name(d: Distance) -> &'static str {
    match d {
        Distance::Cosine => "Cosine",
        Distance::Dot => "Dot",
        Distance::Euclid => "Euclid",
    }
}

pub(crate) fn schema_name(s: PayloadSchemaType) -> &'static str {
    match s {
        PayloadSchemaType::Keyword => "keyword",
        PayloadSchemaType::Integer => "integer",
        PayloadSchemaType::Float => "float",
        PayloadSchemaType::Bool => "bool",
    }
}

pub(crate) async fn get_collection(
    State(state): State<VectorState>,
    Path(name): Path<String>,
) -> Reply {
    blocking(move || {
        let c = collection(&state, &name)?;
        let config = c.config();
        let n = c.len();
        let mut schema = serde_json::Map::new();
        for (field, ty) in c.field_indexes() {
            schema.insert(field, json!({"data_type": schema_name(ty), "points": n}));
        }
        let mut params = json!({
            "vectors": {"size": config.dim, "distance": distance_name(config.distance)},
            "shard_number": 1,
            "replication_factor": 1,
            "write_consistency_factor": 1,
            "on_disk_payload": false,
        });
        if let Some(embed) = &config.embed {
            params["embed"] = json!(embed);
        }
        Ok(json!({
            "status": "green",
            "optimizer_status": "ok",
            "indexed_vectors_count": n,
            "points_count": n,
            "segments_count": 1,
            "config": {
                "params": params,
                "hnsw_config": {
                    "m": config.hnsw.m,
                    "ef_construct": config.hnsw.ef_construct,
                    "full_scan_threshold": neocloud_vector::collection::FULL_SCAN_POINTS,
                    "on_disk": false,
                },
                "optimizer_config": {
                    "deleted_threshold": 0.2,
                    "vacuum_min_vector_number": 1000,
                    "default_segment_number": 1,
                    "flush_interval_sec": 0,
                },
                "wal_config": {"wal_capacity_mb": 64, "wal_segments_ahead": 0},
                "quantization_config": config.quantization.map(|q| json!({
                    "scalar": {"type": "int8", "quantile": q.quantile, "always_ram": q.always_ram}
                })),
            },
            "payload_schema": schema,
        }))
    })
    .await
}
