//! Batches for training jobs: `GET .../batches` (the plan), `GET .../batches/{b}` (one rank's
//! batch of one epoch) and `POST .../batch` (the items a custom sampler chose). The order and
//! the plan are the pipeline's (`pipeline/batch/`); here the parameters are read and the
//! items picked.

use std::sync::LazyLock;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::augment::{PARAMS_2D, PARAMS_3D, parse_augment, parse_u64};
use super::extract::{Params, Path, RawPairs, parse_digits};
use super::images::parse_chain2d;
use super::item::{QueryContext, class_filter, dataset, snapshot, split};
use super::response;
use super::volumes::patches::{PATCH_PARAMS, parse_patch_query};
use super::volumes::query::parse_volume;
use crate::cache::{CacheKey, Canonical, Stage};
use crate::catalog::{Dataset, Item, Kind, Split};
use crate::error::AppError;
use crate::imaging::encode::Format;
use crate::pipeline::VolumePart;
use crate::pipeline::batch::{
    BatchChain, BatchRequest, MAX_BATCH, MAX_WORLD, ORDER_ALGORITHM, ORDER_VERSION, Plan, order,
};
use crate::pipeline::patch::PatchQuery;
use crate::state::AppState;

/// The plan's parameters.
pub const PLAN_PARAMS: &[&str] = &["batch_size", "seed", "world_size", "drop_last", "class"];

/// The chain parameters of 2D datasets only, and of segmentation datasets only (`size`,
/// `mode`, `scale`, `flip` and the random ones are read by either grammar).
const IMAGE_ONLY: &[&str] = &["channels", "palette", "rotate"];
const VOLUME_ONLY: &[&str] = &[
    "a_min",
    "a_max",
    "b_min",
    "b_max",
    "clip",
    "labels",
    "binary",
    "patch",
    "patches_per_item",
    "pos",
    "neg",
    "image_threshold",
];

/// The chain's parameters, either kind's, with the seed and epoch of its random draws.
const CHAIN_PARAMS: &[&str] = &[
    "seed",
    "epoch",
    "size",
    "mode",
    "scale",
    "flip",
    "channels",
    "palette",
    "rotate",
    "a_min",
    "a_max",
    "b_min",
    "b_max",
    "clip",
    "labels",
    "binary",
    "rand_flip",
    "rand_flip_axis",
    "rand_rotate",
    "rand_rotate_prob",
    "patch",
    "patches_per_item",
    "pos",
    "neg",
    "image_threshold",
];

/// `GET .../batches/{b}`'s parameters: the plan's, the rank, and the chain's.
pub static BATCH_PARAMS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let mut names = PLAN_PARAMS.to_vec();
    names.push("rank");
    // `seed` is the plan's and the chain's.
    names.extend(CHAIN_PARAMS.iter().filter(|n| !PLAN_PARAMS.contains(n)));
    names
});

/// `POST .../batch`'s parameters: the chain's.
pub const POST_PARAMS: &[&str] = CHAIN_PARAMS;

/// The plan's parameters, parsed.
pub struct PlanQuery {
    pub batch_size: usize,
    pub seed: Option<u64>,
    pub world_size: usize,
    pub drop_last: bool,
}

fn parse_plan(p: &Params) -> Result<PlanQuery, AppError> {
    if p.get("batch_size").is_none() {
        return Err(AppError::param_allowed(
            "batch_size",
            "required",
            format!("a whole number in 1..={MAX_BATCH}"),
        ));
    }
    Ok(PlanQuery {
        batch_size: p.usize_in("batch_size", 1, 1, MAX_BATCH)?,
        seed: parse_u64(p, "seed")?,
        world_size: p.usize_in("world_size", 1, 1, MAX_WORLD)?,
        drop_last: p.choice("drop_last", false, &[("true", true), ("false", false)])?,
    })
}

/// The split's items in listing order, those of `class=` only when given.
fn members<'a>(ds: &Dataset, sp: &'a Split, p: &Params) -> Result<Vec<&'a Item>, AppError> {
    let class = class_filter(ds, p.get("class"))?;
    Ok(sp
        .items
        .iter()
        .filter(|it| class.is_none() || it.class == class)
        .collect())
}

/// The chain for a dataset of `kind` named `name`; a parameter of the other kind is a 400
/// naming it.
pub fn parse_chain(
    p: &Params,
    cx: &QueryContext<'_>,
    ds: &Dataset,
) -> Result<BatchChain, AppError> {
    let (kind, name) = (ds.kind, ds.name.as_str());
    if let Some(pr) = &ds.processed {
        // The exported arrays went through their chain already: only the random transforms
        // (applied on the fly to the stored arrays) and the plan's own parameters remain.
        let (random, rank) = match kind {
            Kind::Classification => (PARAMS_2D, 2),
            Kind::Segmentation => (PARAMS_3D, 3),
        };
        if let Some(n) = CHAIN_PARAMS
            .iter()
            .find(|n| p.get(n).is_some() && !random.contains(n))
        {
            return Err(AppError::param(
                *n,
                format!(
                    "dataset '{name}' is processed: its items went through `{}` when exported; \
                     {n} applies to the raw dataset '{}' (random transforms: {})",
                    pr.params,
                    pr.source_name,
                    random.join(", ")
                ),
            ));
        }
        return Ok(BatchChain::Processed {
            augment: parse_augment(p, rank)?,
        });
    }
    let (foreign, allowed_random, rank, what) = match kind {
        Kind::Classification => (VOLUME_ONLY, PARAMS_2D, 2, "2D images"),
        Kind::Segmentation => (IMAGE_ONLY, PARAMS_3D, 3, "3D volumes"),
    };
    let stray = foreign
        .iter()
        .chain(PARAMS_2D)
        .find(|n| p.get(n).is_some() && (foreign.contains(n) || !allowed_random.contains(n)));
    if let Some(n) = stray {
        return Err(AppError::param(
            *n,
            format!("dataset '{name}' holds {what}: {n} applies to the other kind of dataset"),
        ));
    }
    let augment = parse_augment(p, rank)?;
    Ok(match kind {
        Kind::Classification => BatchChain::Image {
            chain: parse_chain2d(p, cx.limits)?,
            augment,
        },
        Kind::Segmentation if p.get("patch").is_some() => BatchChain::Patches {
            query: parse_patches(p, cx)?,
            augment,
        },
        Kind::Segmentation => {
            for n in ["patches_per_item", "pos", "neg", "image_threshold"] {
                if p.get(n).is_some() {
                    return Err(AppError::param(
                        n,
                        format!("{n} samples patches: it needs patch=X,Y,Z"),
                    ));
                }
            }
            BatchChain::Volume {
                query: parse_volume(p, cx, Some(Format::Npz), VolumePart::Both)?,
                augment,
            }
        }
    })
}

/// A patch batch's sampling, read by the patch route's grammar (`patches_per_item` as its
/// `num`).
fn parse_patches(p: &Params, cx: &QueryContext<'_>) -> Result<PatchQuery, AppError> {
    let mut pairs: Vec<(String, String)> = PATCH_PARAMS
        .iter()
        .filter(|n| **n != "num")
        .filter_map(|n| p.get(n).map(|v| (n.to_string(), v.to_string())))
        .collect();
    if let Some(v) = p.get("patches_per_item") {
        pairs.push(("num".into(), v.into()));
    }
    let q = Params::new(RawPairs(pairs), PATCH_PARAMS)?;
    parse_patch_query(&q, cx.limits).map_err(|e| match e {
        AppError::InvalidParameter {
            param,
            message,
            allowed,
        } if param == "num" => AppError::InvalidParameter {
            param: "patches_per_item".into(),
            message,
            allowed,
        },
        e => e,
    })
}

/// What names a batch's bytes: its items (by their objects), their padding, the chain and the
/// draws' seed and epoch.
struct BatchName<'a> {
    head: String,
    chain: &'a BatchChain,
    items: &'a [(Item, bool)],
    pads: Vec<bool>,
}

impl Canonical for BatchName<'_> {
    fn write_canonical(&self, out: &mut String) {
        out.push_str(&self.head);
        match self.chain {
            BatchChain::Image { chain, augment } => {
                chain.write_canonical(out);
                out.push('|');
                augment.write_canonical(out);
            }
            BatchChain::Volume { query, augment } => {
                query.write_canonical(out);
                out.push('|');
                augment.write_canonical(out);
            }
            BatchChain::Patches { query, augment } => {
                query.write_canonical(out);
                out.push('|');
                augment.write_canonical(out);
            }
            // The items' objects (their shards) and ranges name the arrays.
            BatchChain::Processed { augment } => {
                out.push_str("processed(");
                for (it, _) in self.items {
                    if let Some(m) = &it.member {
                        out.push_str(&format!("{:?},{:?};", m.image, m.label));
                    }
                }
                out.push_str(")|");
                augment.write_canonical(out);
            }
        }
        out.push_str("|pad(");
        out.extend(self.pads.iter().map(|&p| if p { '1' } else { '0' }));
        out.push(')');
    }
}

/// The dataset name random draws are keyed by: a processed dataset draws as the dataset it
/// was exported from, so its batches equal the raw dataset's, draws included.
fn draw_name(ds: &Dataset) -> String {
    ds.processed
        .as_ref()
        .map_or_else(|| ds.name.clone(), |p| p.source_name.clone())
}

/// What a batch route's grammars may look at (no alias path: a batch is always an npz).
fn context<'a>(headers: &'a HeaderMap, state: &'a AppState) -> QueryContext<'a> {
    QueryContext {
        headers,
        limits: state.pipeline.limits(),
        path: "",
    }
}

/// Answers one batch (ETag, 304, npz).
async fn respond(
    state: &AppState,
    headers: &HeaderMap,
    req: BatchRequest,
    head: String,
    stem: &str,
) -> Result<Response, AppError> {
    let objects = req
        .items
        .iter()
        .flat_map(|(it, _)| std::iter::once(&it.image).chain(it.label.iter()));
    let name = BatchName {
        head,
        chain: &req.chain,
        items: &req.items,
        pads: req.items.iter().map(|(_, p)| *p).collect(),
    };
    let etag = CacheKey::new(Stage::Response, objects, &name).etag("npz");
    response::conditional(headers, &etag, stem, async {
        state.pipeline.batch(&req).await
    })
    .await
}

/// `GET /v1/datasets/{dataset}/splits/{split}/batches`
pub async fn get_plan(
    State(state): State<AppState>,
    Path((ds_name, sp_name)): Path<(String, String)>,
    q: RawPairs,
) -> Result<Response, AppError> {
    let p = Params::for_dataset(q, PLAN_PARAMS)?;
    let pq = parse_plan(&p)?;
    let snap = snapshot(&state).await?;
    let ds = dataset(&snap, &ds_name, p.version())?;
    let sp = split(ds, &sp_name)?;
    let items = members(ds, sp, &p)?;
    let plan = Plan {
        samples: items.len(),
        batch_size: pq.batch_size,
        world_size: pq.world_size,
        drop_last: pq.drop_last,
    };
    let body: Value = json!({
        "dataset": ds.name,
        "split": sp.name,
        "class": p.get("class"),
        "samples": plan.samples,
        "batch_size": plan.batch_size,
        "world_size": plan.world_size,
        "drop_last": plan.drop_last,
        "seed": pq.seed,
        "batches": plan.steps(),
        "padded": plan.padded(),
        "order": {
            "algorithm": if pq.seed.is_some() { ORDER_ALGORITHM } else { "listing" },
            "version": ORDER_VERSION,
        },
    });
    Ok(Json(body).into_response())
}

/// Where a batch sits: the plan's parameters, the epoch, the rank and the batch index.
pub struct Position {
    pub plan: PlanQuery,
    pub epoch: u64,
    pub rank: usize,
    pub step: usize,
}

pub fn parse_position(p: &Params, b: &str) -> Result<Position, AppError> {
    let step = parse_digits(b)
        .filter(|&n| n <= u32::MAX as usize)
        .ok_or_else(|| {
            AppError::param_allowed(
                "batch",
                format!("'{b}' is not a batch index"),
                "a whole number: 0 up to the plan's batches - 1",
            )
        })?;
    let plan = parse_plan(p)?;
    let epoch = parse_u64(p, "epoch")?.unwrap_or(0);
    let rank = p.usize_in("rank", 0, 0, MAX_WORLD - 1)?;
    if rank >= plan.world_size {
        return Err(AppError::param_allowed(
            "rank",
            format!("rank {rank} is not below world_size {}", plan.world_size),
            format!("0..={}", plan.world_size - 1),
        ));
    }
    Ok(Position {
        plan,
        epoch,
        rank,
        step,
    })
}

fn batch_not_found(plan: &Plan, b: String) -> AppError {
    AppError::NotFound {
        what: "batch",
        name: b,
        available: vec![],
        hint: Some(format!(
            "this plan has {} batches per rank and epoch ({} items, batch_size {}, world_size \
             {}, drop_last {}): 0..={}",
            plan.steps(),
            plan.samples,
            plan.batch_size,
            plan.world_size,
            plan.drop_last,
            plan.steps() as i64 - 1
        )),
    }
}

/// `GET /v1/datasets/{dataset}/splits/{split}/batches/{batch}`
pub async fn get_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((ds_name, sp_name, b)): Path<(String, String, String)>,
    q: RawPairs,
) -> Result<Response, AppError> {
    let p = Params::for_dataset(q, &BATCH_PARAMS)?;
    let Position {
        plan: pq,
        epoch,
        rank,
        step,
    } = parse_position(&p, &b)?;
    let snap = snapshot(&state).await?;
    let ds = dataset(&snap, &ds_name, p.version())?;
    let sp = split(ds, &sp_name)?;
    let chain = parse_chain(&p, &context(&headers, &state), ds)?;
    let items = members(ds, sp, &p)?;
    let plan = Plan {
        samples: items.len(),
        batch_size: pq.batch_size,
        world_size: pq.world_size,
        drop_last: pq.drop_last,
    };
    if step >= plan.steps() {
        return Err(batch_not_found(&plan, b));
    }
    let perm = order(pq.seed, epoch, items.len());
    let batch = |step: usize| BatchRequest {
        dataset: draw_name(ds),
        split: sp.name.clone(),
        items: plan
            .slots(step, rank)
            .into_iter()
            .map(|(pos, pad)| (items[perm[pos] as usize].clone(), pad))
            .collect(),
        chain: chain.clone(),
    };
    let seed = pq.seed.map_or("none".to_string(), |s| s.to_string());
    let head = format!(
        "batch(order={ORDER_ALGORITHM}-v{ORDER_VERSION},seed={seed},epoch={epoch},n={},b={},w={},\
         drop={},step={step},rank={rank})|",
        plan.samples, plan.batch_size, plan.world_size, plan.drop_last
    );
    let stem = format!("{}_{}_e{epoch}_r{rank}_b{step}", ds.name, sp.name);
    let resp = respond(&state, &headers, batch(step), head, &stem).await?;
    // A job reading batch b reads b+1 next: have it ready.
    if resp.status().is_success() && step + 1 < plan.steps() {
        state.pipeline.prefetch(batch(step + 1));
    }
    Ok(resp)
}

/// The body of `POST .../batch`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdList {
    ids: Vec<String>,
}

/// `POST /v1/datasets/{dataset}/splits/{split}/batch`
pub async fn post_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((ds_name, sp_name)): Path<(String, String)>,
    q: RawPairs,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    let p = Params::for_dataset(q, POST_PARAMS)?;
    let list: IdList = serde_json::from_slice(&body).map_err(|e| {
        AppError::param_allowed(
            "body",
            format!("not the expected JSON: {e}"),
            format!(r#"{{"ids": ["<item id>", ...]}} with 1..={MAX_BATCH} ids"#),
        )
    })?;
    if list.ids.is_empty() || list.ids.len() > MAX_BATCH {
        return Err(AppError::param_allowed(
            "body",
            format!("{} ids", list.ids.len()),
            format!("1..={MAX_BATCH} ids"),
        ));
    }
    let snap = snapshot(&state).await?;
    let ds = dataset(&snap, &ds_name, p.version())?;
    let sp = split(ds, &sp_name)?;
    let chain = parse_chain(&p, &context(&headers, &state), ds)?;
    let mut items = Vec::with_capacity(list.ids.len());
    for id in &list.ids {
        let it = sp.item(id).ok_or_else(|| AppError::NotFound {
            what: "item",
            name: id.clone(),
            available: vec![],
            hint: Some(format!(
                "ids are those of /v1/datasets/{}/splits/{}/items",
                ds.name, sp.name
            )),
        })?;
        items.push((it.clone(), false));
    }
    let head = "ids|".to_string();
    let stem = format!("{}_{}_batch", ds.name, sp.name);
    let req = BatchRequest {
        dataset: draw_name(ds),
        split: sp.name.clone(),
        items,
        chain,
    };
    respond(&state, &headers, req, head, &stem).await
}
