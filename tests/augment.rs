//! Seeded random transforms over HTTP: a pure function of the URL, reported in `X-Augment`
//! exactly enough that the deterministic parameters replay the same bytes.

mod common;

use common::{app, assert_problem, get, parse_npy};

const ITEM: &str = "/v1/datasets/medmnist/splits/train/items/HeadCT~005001";
const ITEMS: &str = "/v1/datasets/medmnist/splits/train/items";
const SPLEEN: &str = "/v1/datasets/Task09_Spleen/splits/train/items/spleen_10";

/// The seed's 2D random step, `RandFlip(prob=0.5), RandRotate(range_x, prob=0.5)`, with a
/// range in radians as MONAI reads it.
const SEED_2D: &str = "rand_flip=0.5&rand_rotate=0.2618&rand_rotate_prob=0.5";

async fn item_ids(app: &axum::Router, n: usize) -> Vec<String> {
    let j = get(app, &format!("{ITEMS}?limit={n}")).await.json();
    j["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_same_url_gives_the_same_bytes_and_its_replay_too() {
    let (app, _) = app();
    let mut headers = std::collections::BTreeSet::new();
    for id in item_ids(&app, 24).await {
        let url = format!("{ITEMS}/{id}/image?format=npy&{SEED_2D}&seed=42&epoch=3");
        let a = get(&app, &url).await;
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        let b = get(&app, &url).await;
        assert_eq!(a.body, b.body);
        let drawn = a.header("x-augment").to_string();
        assert_eq!(drawn, b.header("x-augment"));
        // Replaying the draws with the deterministic parameters gives the same bytes.
        let replay = match drawn.as_str() {
            "none" => String::new(),
            d => format!("&{}", d.replace(';', "&")),
        };
        let r = get(&app, &format!("{ITEMS}/{id}/image?format=npy{replay}")).await;
        assert_eq!(r.status, 200, "{replay}");
        assert_eq!(r.body, a.body, "{id}: {drawn}");
        assert!(
            r.header("x-augment").is_empty(),
            "no random transform, no header"
        );
        headers.insert(drawn);
    }
    // Over 24 items at p = 0.5 each, the draws differ between items.
    assert!(headers.len() > 4, "{headers:?}");
    assert!(headers.iter().any(|h| h.contains("flip=all")));
    assert!(headers.iter().any(|h| h.contains("rotate=")));
}

#[tokio::test]
async fn seed_and_epoch_change_the_draws_nothing_else_does() {
    let (app, _) = app();
    let draws = |seed: u64, epoch: u64| {
        let app = app.clone();
        async move {
            let mut out = Vec::new();
            for id in item_ids(&app, 16).await {
                let url = format!(
                    "{ITEMS}/{id}/image?format=npy&rand_rotate=1&rand_rotate_prob=1&seed={seed}&epoch={epoch}"
                );
                out.push(get(&app, &url).await.header("x-augment").to_string());
            }
            out
        }
    };
    let base = draws(1, 0).await;
    assert_eq!(base, draws(1, 0).await);
    assert_ne!(base, draws(2, 0).await);
    assert_ne!(base, draws(1, 1).await);
    for h in &base {
        let angle: f64 = h.strip_prefix("rotate=").unwrap().parse().unwrap();
        assert!(angle.abs() < 1.0, "{h}");
    }
    // epoch defaults to 0.
    let url = format!("{ITEM}/image?format=npy&rand_rotate=1&rand_rotate_prob=1&seed=1");
    let explicit = format!("{url}&epoch=0");
    assert_eq!(get(&app, &url).await.body, get(&app, &explicit).await.body);
}

#[tokio::test]
async fn probabilities_zero_and_one() {
    let (app, _) = app();
    let base = get(&app, &format!("{ITEM}/image?format=npy")).await;
    let never = get(&app, &format!("{ITEM}/image?format=npy&rand_flip=0&seed=5")).await;
    assert_eq!(never.header("x-augment"), "none");
    assert_eq!(never.body, base.body);
    let always = get(
        &app,
        &format!("{ITEM}/image?format=npy&rand_flip=1&rand_flip_axis=0&seed=5"),
    )
    .await;
    assert_eq!(always.header("x-augment"), "flip=0");
    let (shape, plain) = parse_npy(&base.body);
    let (_, flipped) = parse_npy(&always.body);
    for (row, frow) in plain.chunks(shape[2]).zip(flipped.chunks(shape[2])) {
        assert!(row.iter().eq(frow.iter().rev()));
    }
}

#[tokio::test]
async fn random_parameters_are_validated() {
    let (app, _) = app();
    let img = format!("{ITEM}/image");
    for (q, param, says) in [
        ("rand_flip=0.5", "seed", "need seed="),
        ("rand_rotate=0.3", "seed", "need seed="),
        ("rand_flip=1.5&seed=1", "rand_flip", "[0, 1]"),
        ("rand_flip=-0.1&seed=1", "rand_flip", "[0, 1]"),
        ("rand_flip=nan&seed=1", "rand_flip", "[0, 1]"),
        (
            "rand_flip_axis=0&seed=1",
            "rand_flip_axis",
            "only means something",
        ),
        (
            "rand_rotate_prob=0.5&seed=1",
            "rand_rotate_prob",
            "only means something",
        ),
        (
            "rand_flip=1&rand_flip_axis=2&seed=1",
            "rand_flip_axis",
            "spatial axis",
        ),
        ("rand_rotate=-1&seed=1", "rand_rotate", "radians"),
        ("rand_rotate=1e7&seed=1", "rand_rotate", "radians"),
        (
            "flip=0&rand_flip=1&seed=1",
            "rand_flip",
            "cannot be combined",
        ),
        (
            "rotate=1&rand_rotate=1&seed=1",
            "rand_rotate",
            "cannot be combined",
        ),
        ("rand_flip=1&seed=-1", "seed", "whole number"),
        (
            "rand_flip=1&seed=18446744073709551616",
            "seed",
            "whole number",
        ),
        ("rand_flip=1&seed=1&epoch=x", "epoch", "whole number"),
    ] {
        let r = get(&app, &format!("{img}?{q}")).await;
        let p = assert_problem(&r, 400, "invalid-parameter");
        assert_eq!(p["parameter"], param, "{q}: {p}");
        let text = format!("{}{}", p["detail"], p["allowed"]);
        assert!(text.contains(says), "{q}: {p}");
    }
    // seed and epoch alone are harmless (a client may send them with every request).
    let r = get(&app, &format!("{img}?format=npy&seed=3&epoch=2")).await;
    assert_eq!(r.status, 200);
    // Volumes flip and do not rotate.
    let r = get(&app, &format!("{SPLEEN}/volume?rand_rotate=1&seed=1")).await;
    assert_problem(&r, 400, "invalid-parameter");
}

#[tokio::test]
async fn volumes_flip_image_and_mask_alike() {
    let (app, _) = app();
    let q = "size=32,32,16&format=npz&part=both";
    let always = get(
        &app,
        &format!("{SPLEEN}/volume?{q}&rand_flip=1&rand_flip_axis=0&seed=9"),
    )
    .await;
    assert_eq!(
        always.status,
        200,
        "{}",
        String::from_utf8_lossy(&always.body)
    );
    assert_eq!(always.header("x-augment"), "flip=0");
    let replay = get(&app, &format!("{SPLEEN}/volume?{q}&flip=0")).await;
    assert_eq!(always.body, replay.body);
    let all = get(&app, &format!("{SPLEEN}/volume?{q}&rand_flip=1&seed=9")).await;
    assert_eq!(all.header("x-augment"), "flip=all");
    let replay = get(&app, &format!("{SPLEEN}/volume?{q}&flip=all")).await;
    assert_eq!(all.body, replay.body);
    assert!(
        all.header("access-control-expose-headers").is_empty()
            || all
                .header("access-control-expose-headers")
                .contains("x-augment")
    );
}
