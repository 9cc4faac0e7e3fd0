//! The patch draws: MONAI's ratio and fallbacks, and the documented counter-based draws.

use super::*;

fn scope(seed: u64) -> DrawScope<'static> {
    DrawScope {
        seed,
        epoch: 0,
        dataset: "d",
        split: "train",
        item: "x",
    }
}

fn indices() -> FgBgIndices {
    FgBgIndices {
        shape: [10, 10, 10],
        fg: vec![555],
        bg: (0..1000).filter(|&i| i != 555).collect(),
    }
}

#[test]
fn draws_follow_the_ratio_and_fall_back_like_monai() {
    let ix = indices();
    let centered = [5, 5, 5];
    let all_fg = draw_centers(&scope(1), 1.0, &ix, 64, [1, 1, 1]).unwrap();
    assert!(all_fg.iter().all(|&c| c == centered));
    let none_fg = draw_centers(&scope(1), 0.0, &ix, 64, [1, 1, 1]).unwrap();
    assert!(none_fg.iter().all(|&c| c != centered));
    let half = draw_centers(&scope(1), 0.5, &ix, 64, [1, 1, 1]).unwrap();
    let n = half.iter().filter(|&&c| c == centered).count();
    assert!((16..=48).contains(&n), "{n}");
    // One empty list: the other is used whatever the ratio (MONAI sets pos_ratio to 0/1).
    let only_bg = FgBgIndices {
        fg: vec![],
        ..indices()
    };
    assert!(draw_centers(&scope(2), 1.0, &only_bg, 8, [3, 3, 3]).is_some());
    let empty = FgBgIndices {
        fg: vec![],
        bg: vec![],
        ..indices()
    };
    assert!(draw_centers(&scope(2), 0.5, &empty, 8, [3, 3, 3]).is_none());
    // Same scope, same draws; another seed, other draws.
    assert_eq!(
        draw_centers(&scope(3), 0.5, &ix, 8, [2, 2, 2]),
        draw_centers(&scope(3), 0.5, &ix, 8, [2, 2, 2])
    );
    assert_ne!(
        draw_centers(&scope(3), 0.5, &ix, 8, [2, 2, 2]),
        draw_centers(&scope(4), 0.5, &ix, 8, [2, 2, 2])
    );
}

#[test]
fn draws_are_the_documented_ones() {
    let ix = indices();
    let s = scope(9);
    let got = draw_centers(&s, 0.3, &ix, 4, [4, 4, 4]).unwrap();
    for (k, c) in got.iter().enumerate() {
        let k = k as u64;
        let list = if s.unit("rand_crop_pos_neg", 2 * k) < 0.3 {
            &ix.fg
        } else {
            &ix.bg
        };
        let i = list[(s.bits("rand_crop_pos_neg", 2 * k + 1) % list.len() as u64) as usize];
        let v = patch::unravel(i as usize, ix.shape);
        assert_eq!(*c, patch::correct_crop_center(v, [4, 4, 4], ix.shape));
    }
}
