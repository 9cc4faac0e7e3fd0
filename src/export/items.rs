//! What one exported item is: the chain read from the HTTP query's parameters, and the item
//! rendered through it into its tar members (the image and volume routes' `.npy` bodies, the
//! class index, the item's JSON).

use bytes::Bytes;
use serde_json::json;

use super::manifest::{MemberEntry, SourceObject};
use super::shard::member_key;
use crate::api::extract::{Params, RawPairs};
use crate::api::images::parse_chain2d;
use crate::api::volumes::query::{parse_chain3d, parse_select};
use crate::cache::Canonical;
use crate::catalog::{Dataset, Item, Kind, Snapshot};
use crate::config::Limits;
use crate::error::AppError;
use crate::imaging::encode::{Encoded, Format};
use crate::imaging::volume::LabelSelect;
use crate::pipeline::image::PreparedImage;
use crate::pipeline::{Chain2d, Chain3d, Pipeline, VolumePart, VolumeQuery};
use anyhow::{anyhow, bail};

/// Chain parameters of a 2D export (the image route's, without format and random ones).
pub const PARAMS_2D: &[&str] = &[
    "size", "mode", "scale", "channels", "palette", "flip", "rotate",
];
/// Chain parameters of a 3D export (the volume route's, without format and random ones).
pub const PARAMS_3D: &[&str] = &[
    "size", "mode", "a_min", "a_max", "b_min", "b_max", "clip", "scale", "part", "labels",
    "binary", "flip",
];

/// How each item is computed.
#[derive(Debug, Clone)]
pub(super) enum ItemChain {
    Image(Chain2d),
    Volume {
        chain: Chain3d,
        select: LabelSelect,
        part: VolumePart,
    },
}

/// One item rendered: its tar members (suffix, bytes) and its manifest entry (ranges unset).
pub(super) struct Rendered {
    pub(super) members: Vec<(&'static str, Bytes)>,
    pub(super) entry: MemberEntry,
}

/// `AppError`s of the chain's grammar, as a command line reads them.
pub(super) fn usage(e: AppError) -> anyhow::Error {
    match e {
        AppError::InvalidParameter {
            param,
            message,
            allowed,
        } => match allowed {
            Some(a) => anyhow!("chain parameter {param}: {message}; allowed: {a}"),
            None => anyhow!("chain parameter {param}: {message}"),
        },
        e => anyhow!("{e}"),
    }
}

pub(super) fn parse_item_chain(
    ds: &Dataset,
    pairs: &[(String, String)],
) -> anyhow::Result<ItemChain> {
    let limits = Limits::default();
    let allowed = match ds.kind {
        Kind::Classification => PARAMS_2D,
        Kind::Segmentation => PARAMS_3D,
    };
    let p = Params::new(RawPairs(pairs.to_vec()), allowed).map_err(usage)?;
    Ok(match ds.kind {
        Kind::Classification => ItemChain::Image(parse_chain2d(&p, &limits).map_err(usage)?),
        Kind::Segmentation => ItemChain::Volume {
            chain: parse_chain3d(&p, &limits).map_err(usage)?,
            select: parse_select(&p).map_err(usage)?,
            part: p
                .choice(
                    "part",
                    VolumePart::Both,
                    &[
                        ("image", VolumePart::Image),
                        ("label", VolumePart::Label),
                        ("both", VolumePart::Both),
                    ],
                )
                .map_err(usage)?,
        },
    })
}

impl ItemChain {
    pub(super) fn canonical(&self) -> String {
        match self {
            ItemChain::Image(c) => c.canonical(),
            ItemChain::Volume {
                chain,
                select,
                part,
            } => format!(
                "part({})|{}|{}",
                part.name(),
                chain.canonical(),
                select.canonical()
            ),
        }
    }

    pub(super) fn members(&self, ds: &Dataset) -> Vec<String> {
        let with_label = ds
            .splits
            .iter()
            .flat_map(|s| &s.items)
            .any(|i| i.label.is_some());
        let names: &[&str] = match self {
            ItemChain::Image(_) => &["image.npy", "cls", "json"],
            ItemChain::Volume { part, .. } => match part {
                VolumePart::Image => &["image.npy", "json"],
                VolumePart::Label => &["label.npy", "json"],
                VolumePart::Both if with_label => &["image.npy", "label.npy", "json"],
                VolumePart::Both => &["image.npy", "json"],
            },
        };
        names.iter().map(|s| s.to_string()).collect()
    }
}

pub(super) fn pick_dataset<'a>(
    snap: &'a Snapshot,
    name: Option<&str>,
) -> anyhow::Result<&'a Dataset> {
    let names: Vec<&str> = snap.listed().map(|d| d.name.as_str()).collect();
    match name {
        // A versioned dataset's bare name exports its newest version.
        Some(n) => snap.find(n).ok_or_else(|| {
            anyhow!(
                "--dataset {n}: not found in the source; it holds: {}",
                names.join(", ")
            )
        }),
        None if names.len() == 1 => Ok(snap.listed().next().expect("one")),
        None if names.is_empty() => bail!("the source holds no dataset medserve recognises"),
        None => bail!(
            "the source holds {} datasets; name one with --dataset ({})",
            names.len(),
            names.join(", ")
        ),
    }
}

pub(super) async fn encoded_volume(
    pipeline: &Pipeline,
    item: &Item,
    chain: Chain3d,
    select: &LabelSelect,
    part: VolumePart,
) -> anyhow::Result<Encoded> {
    let query = VolumeQuery {
        chain,
        part,
        format: Format::Npy,
        select: if part == VolumePart::Image {
            LabelSelect::default()
        } else {
            select.clone()
        },
    };
    let p = pipeline
        .prepare_volume(item, query)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    pipeline
        .volume_response(p)
        .await
        .map_err(|e| anyhow!("{e}"))
}

/// One item through the chain: exactly the bodies the HTTP routes answer with `format=npy`.
pub(super) async fn render(
    pipeline: &Pipeline,
    ds: &Dataset,
    split: &str,
    item: &Item,
    chain: &ItemChain,
    params: &str,
) -> anyhow::Result<Rendered> {
    let mut members: Vec<(&'static str, Bytes)> = Vec::new();
    let mut arrays = serde_json::Map::new();
    let mut put = |name: &'static str, e: &Encoded, members: &mut Vec<_>| {
        arrays.insert(
            name.trim_end_matches(".npy").into(),
            json!({"dtype": e.dtype, "shape": e.shape}),
        );
        members.push((name, e.body.clone()));
    };
    let mut source = vec![&item.image];
    match chain {
        ItemChain::Image(c) => {
            let e = pipeline
                .image(item, PreparedImage::new(item, *c, Format::Npy))
                .await
                .map_err(|e| anyhow!("{e}"))?;
            put("image.npy", &e, &mut members);
            let class = item.class.map_or(-1, |c| c as i64);
            members.push(("cls", Bytes::from(class.to_string())));
        }
        ItemChain::Volume {
            chain,
            select,
            part,
        } => {
            if *part != VolumePart::Label {
                let e = encoded_volume(pipeline, item, *chain, select, VolumePart::Image).await?;
                put("image.npy", &e, &mut members);
            }
            if *part != VolumePart::Image && item.label.is_some() {
                let e = encoded_volume(pipeline, item, *chain, select, VolumePart::Label).await?;
                put("label.npy", &e, &mut members);
                source.extend(item.label.as_ref());
            }
        }
    }
    let source: Vec<SourceObject> = source
        .into_iter()
        .map(|o| SourceObject {
            key: o.key.clone(),
            version: o.version.clone(),
        })
        .collect();
    let class_name = item.class.and_then(|c| ds.classes.get(c));
    let meta = json!({
        "id": item.id,
        "dataset": ds.name,
        "split": split,
        "class": class_name,
        "class_index": item.class,
        "subject": item.subject,
        "source": source,
        "chain": chain.canonical(),
        "params": params,
        "arrays": arrays,
    });
    members.push(("json", Bytes::from(serde_json::to_vec(&meta)?)));
    Ok(Rendered {
        members,
        entry: MemberEntry {
            id: item.id.clone(),
            key: member_key(&item.id),
            class: item.class,
            subject: item.subject.clone(),
            source,
            image: [0, 0],
            label: None,
        },
    })
}

/// The planned items' sources, to compare with a stored shard's entry.
pub(super) fn sources_of(item: &Item, chain: &ItemChain) -> Vec<SourceObject> {
    let with_label = match chain {
        ItemChain::Image(_) => false,
        ItemChain::Volume { part, .. } => *part != VolumePart::Image,
    };
    std::iter::once(&item.image)
        .chain(item.label.iter().filter(|_| with_label))
        .map(|o| SourceObject {
            key: o.key.clone(),
            version: o.version.clone(),
        })
        .collect()
}
