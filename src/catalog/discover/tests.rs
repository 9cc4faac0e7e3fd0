//! Discovery rules on listings made up for each case.

use super::*;
use crate::catalog::Kind;

fn meta(keys: &[&str]) -> Vec<ObjectMeta> {
    keys.iter()
        .map(|k| ObjectMeta {
            key: k.to_string(),
            size: 1,
            version: "v".into(),
            version_id: None,
        })
        .collect()
}

fn run(keys: &[&str]) -> Snapshot {
    discover(
        &meta(keys),
        &HashMap::new(),
        &HashMap::new(),
        &CatalogFile {
            discover: true,
            ..Default::default()
        },
        "data",
    )
}

#[test]
fn classification_with_splits_and_junk() {
    let s = run(&[
        "medmnist/train/CXR/2.png",
        "medmnist/train/AbdomenCT/1.png",
        "medmnist/train/AbdomenCT/._1.png",
        "medmnist/.DS_Store",
        "medmnist/test/Hand/9.png",
        "medmnist/val/Hand/3.jpeg",
        "medmnist/train/notes.txt",
    ]);
    let d = &s.datasets["medmnist"];
    assert_eq!(d.kind, Kind::Classification);
    assert_eq!(d.classes, ["AbdomenCT", "CXR", "Hand"]);
    assert_eq!(d.split_names(), ["train", "val", "test"]);
    let train = d.split("train").unwrap();
    assert_eq!(train.items[0].id, "AbdomenCT~1");
    assert_eq!(train.items[0].class, Some(0));
    assert_eq!(train.items[1].id, "CXR~2");
    assert_eq!(train.class_counts(3), [1, 1, 0]);
    assert_eq!(s.objects_unmatched, 1);
}

#[test]
fn seed_s3_layout_and_mednist_tarball() {
    let s = run(&[
        "classification/raw/train/CXR/1.png",
        "MedNIST/Hand/000001.jpeg",
        "MedNIST/HeadCT/000001.jpeg",
    ]);
    assert_eq!(s.datasets["classification"].split_names(), ["train"]);
    let m = &s.datasets["MedNIST"];
    assert_eq!(m.split_names(), ["all"]);
    assert_eq!(m.split("all").unwrap().items[1].id, "HeadCT~000001");
}

/// The workshop page's tree: `<area>/{raw,processed,artifacts}`, with dated versions.
#[test]
fn workshop_tree_with_versions_and_artifacts() {
    let s = run(&[
        "classification/raw/2026-11-20/train/CXR/1.png",
        "classification/raw/2026-11-27/train/CXR/1.png",
        "classification/raw/2026-11-27/train/Hand/2.png",
        "classification/raw/2026-11-27/val/Hand/3.png",
        "classification/artifacts/confusion/CXR/matrix.png",
        "classification/artifacts/model.pt",
        "segmentation/raw/train/subject_001/img.nii.gz",
        "segmentation/raw/train/subject_001/label.nii.gz",
        "segmentation/raw/valid/subject_001/img.nii.gz",
        "segmentation/artifacts/run1/subject_001/img.nii.gz",
        "mednist@2026-11-01/train/CXR/1.png",
    ]);
    let names: Vec<&str> = s.datasets.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "classification@2026-11-20",
            "classification@2026-11-27",
            "mednist@2026-11-01",
            "segmentation"
        ]
    );
    let new = &s.datasets["classification@2026-11-27"];
    assert_eq!(
        (new.base(), new.version()),
        ("classification", Some("2026-11-27"))
    );
    assert_eq!(new.root, "classification/raw/2026-11-27/");
    assert_eq!(new.split_names(), ["train", "val"]);
    assert_eq!(s.datasets["classification@2026-11-20"].item_count(), 1);
    assert_eq!(s.newest["classification"], "classification@2026-11-27");
    assert_eq!(s.newest["mednist"], "mednist@2026-11-01");
    let versions: Vec<&str> = s
        .versions("classification")
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(
        versions,
        ["classification@2026-11-20", "classification@2026-11-27"]
    );
    assert_eq!(s.versions("segmentation").count(), 0);
    assert_eq!(s.datasets["segmentation"].split_names(), ["train", "valid"]);
    // Artifacts are neither datasets nor unmatched objects.
    assert_eq!(s.objects_unmatched, 0);
    assert_eq!(s.objects_listed, 8);
}

#[test]
fn subject_folders_and_decathlon() {
    let s = run(&[
        "segmentation/train/subject_001/img.nii.gz",
        "segmentation/train/subject_001/label.nii.gz",
        "segmentation/valid/subject_002/img.nii.gz",
        "Task09_Spleen/dataset.json",
        "Task09_Spleen/imagesTr/spleen_2.nii.gz",
        "Task09_Spleen/imagesTr/._spleen_2.nii.gz",
        "Task09_Spleen/labelsTr/spleen_2.nii.gz",
        "Task09_Spleen/imagesTs/spleen_1.nii.gz",
    ]);
    let seg = &s.datasets["segmentation"];
    assert_eq!(seg.layout, Layout::SubjectFolders);
    assert_eq!(seg.split_names(), ["train", "valid"]);
    let sub = seg.split("train").unwrap().item("subject_001").unwrap();
    assert!(sub.label.is_some());
    assert!(seg.split("valid").unwrap().items[0].label.is_none());
    let task = &s.datasets["Task09_Spleen"];
    assert_eq!(task.layout, Layout::Decathlon);
    assert_eq!(task.split_names(), ["train", "test"]);
    let tr = task.split("train").unwrap().item("spleen_2").unwrap();
    assert_eq!(
        tr.label.as_ref().unwrap().key,
        "Task09_Spleen/labelsTr/spleen_2.nii.gz"
    );
}

#[test]
fn decathlon_json_drives_items_and_labels() {
    let keys = meta(&[
        "Task04/dataset.json",
        "Task04/imagesTr/a.nii.gz",
        "Task04/labelsTr/a.nii.gz",
        "Task04/imagesTr/b.nii.gz",
        "Task04/imagesTs/c.nii.gz",
    ]);
    let json: DecathlonJson = serde_json::from_str(
        r#"{"name":"Hippocampus","labels":{"0":"background","1":"Anterior"},
            "training":[{"image":"./imagesTr/a.nii.gz","label":"./labelsTr/a.nii.gz"}],
            "test":["./imagesTs/c.nii.gz"]}"#,
    )
    .unwrap();
    let jsons = HashMap::from([("Task04/dataset.json".to_string(), json)]);
    let file = CatalogFile {
        discover: true,
        ..Default::default()
    };
    assert_eq!(decathlon_json_keys(&keys, &file), ["Task04/dataset.json"]);
    let s = discover(&keys, &jsons, &HashMap::new(), &file, "data");
    let d = &s.datasets["Task04"];
    assert_eq!(d.labels["1"], "Anterior");
    assert_eq!(d.info["name"], "Hippocampus");
    // b is not in dataset.json's training list, so it is not served.
    assert_eq!(d.split("train").unwrap().items.len(), 1);
    assert_eq!(d.split("test").unwrap().items[0].id, "c");
}

#[test]
fn decathlon_and_nnunet_label_maps_both_name_values() {
    let names = |text: &str| serde_json::from_str::<DecathlonJson>(text).unwrap().labels;
    let want: BTreeMap<String, String> = [("0", "background"), ("1", "liver")]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
    assert_eq!(names(r#"{"labels":{"0":"background","01":"liver"}}"#), want);
    assert_eq!(
        names(r#"{"labels":{"background":0,"liver":1,"tumour region":[1,2],"x":300}}"#),
        want
    );
    assert!(names(r#"{"labels":null}"#).is_empty());
    assert!(names(r#"{"labels":["background","liver"]}"#).is_empty());
    assert!(names(r#"{"name":"only a name"}"#).is_empty());
}

#[test]
fn overrides_name_a_prefix_and_can_disable_discovery() {
    let keys = meta(&[
        "classification/raw/train/CXR/1.png",
        "other/train/CXR/1.png",
    ]);
    let file = CatalogFile {
        datasets: vec![DatasetOverride {
            name: "mednist".into(),
            prefix: "classification/raw".into(),
        }],
        discover: false,
    };
    let s = discover(&keys, &HashMap::new(), &HashMap::new(), &file, "data");
    assert_eq!(s.datasets.keys().collect::<Vec<_>>(), ["mednist"]);
    assert_eq!(s.datasets["mednist"].root, "classification/raw/");
}

#[test]
fn data_root_that_is_itself_a_dataset_uses_the_fallback_name() {
    let s = run(&["train/CXR/1.png"]);
    assert_eq!(s.datasets.keys().collect::<Vec<_>>(), ["data"]);
}
