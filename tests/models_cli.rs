//! `streamcast models validate` and `models build` on real ONNX files: what start-up would hit is
//! refused at validation, and a built bundle serves the numbers its golden cases promise.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn streamcast(args: &[&str]) -> Output {
    Command::new(bin()).args(args).current_dir(repo()).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Rewrites an ONNX file with onnx (Python), an independent tool, running `edit` on the model `m`.
fn edit_onnx(from: &Path, to: &Path, edit: &str) {
    let script = format!(
        "import onnx, numpy as np\nfrom onnx import numpy_helper\nm = onnx.load({from:?})\n{edit}\nonnx.save(m, {to:?})\n",
        from = from.display().to_string(),
        to = to.display().to_string()
    );
    let out = Command::new(repo().join(".venv/bin/python")).args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

fn copy_manifest(to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::copy(repo().join("models/co2-mlp/1/bundle.json"), to.join("bundle.json")).unwrap();
}

#[test]
fn a_fixed_batch_axis_and_a_double_input_are_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = repo().join("models/co2-mlp/1/model.onnx");

    // Exported with batch size 1: golden cases (one window each) would pass, start-up would not.
    let fixed = dir.path().join("fixed/1");
    copy_manifest(&fixed);
    edit_onnx(
        &shipped,
        &fixed.join("model.onnx"),
        "for t in list(m.graph.input) + list(m.graph.output):\n    d = t.type.tensor_type.shape.dim[0]\n    d.ClearField('dim_param')\n    d.dim_value = 1",
    );
    let out = streamcast(&["models", "validate", fixed.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("fixed batch dimension 1")
            && err.contains("dynamic_axes")
            && err.contains("FloatTensorType([None"),
        "{err}"
    );

    // A model whose rows depend on the rest of the batch (here: plus the batch's spread of its
    // inputs): every golden case passes alone; only a batch of several windows shows it.
    let coupled = dir.path().join("coupled/1");
    copy_manifest(&coupled);
    edit_onnx(
        &shipped,
        &coupled.join("model.onnx"),
        "from onnx import helper\n\
         last = m.graph.node[-1]\n\
         last.output[0] = 'raw'\n\
         m.graph.node.extend([\n\
             helper.make_node('ReduceMax', ['input'], ['mx'], axes=[0], keepdims=1),\n\
             helper.make_node('ReduceMin', ['input'], ['mn'], axes=[0], keepdims=1),\n\
             helper.make_node('Sub', ['mx', 'mn'], ['spread']),\n\
             helper.make_node('ReduceMax', ['spread'], ['s'], axes=[1], keepdims=1),\n\
             helper.make_node('Add', ['raw', 's'], ['output'])])",
    );
    let out = streamcast(&["models", "validate", coupled.to_str().unwrap(), "--batch-size", "8"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("in a batch of 8") && err.contains("not independent of the batch"), "{err}");
    // With a batch of one, the same model passes: the batch check is what catches it.
    let out = streamcast(&["models", "validate", coupled.to_str().unwrap(), "--batch-size", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // float64 in and out (skl2onnx's DoubleTensorType): named, with the fix.
    let double = dir.path().join("double/1");
    copy_manifest(&double);
    edit_onnx(
        &shipped,
        &double.join("model.onnx"),
        "m.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.DOUBLE",
    );
    let out = streamcast(&["models", "validate", double.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("Float64") && err.contains("float32") && err.contains("FloatTensorType"), "{err}");
}

#[test]
fn models_build_stages_validates_and_publishes_a_bundle_that_serves_its_golden_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let shipped: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("models/co2-mlp/1/bundle.json")).unwrap()).unwrap();
    let scaler = dir.path().join("scaler.json");
    std::fs::write(&scaler, shipped["scaler"].to_string()).unwrap();
    // The shipped bundle's golden cases stand in for the framework's own predictions.
    let golden = dir.path().join("golden.jsonl");
    let lines: Vec<String> = shipped["golden"].as_array().unwrap().iter().map(|g| g.to_string()).collect();
    std::fs::write(&golden, lines.join("\n")).unwrap();
    let root = dir.path().join("root");
    let onnx = repo().join("models/co2-mlp/1/model.onnx");
    let build = |extra: &[&str]| {
        let mut args = vec!["models", "build", "--onnx", onnx.to_str().unwrap(), "--scaler", scaler.to_str().unwrap()];
        args.extend(["--reference", "data/co2_weekly.csv", "--name", "mine", "--root", root.to_str().unwrap()]);
        args.extend(extra);
        streamcast(&args)
    };

    let out = build(&["--window", "24", "--golden", golden.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("mine/1/bundle.json")).unwrap()).unwrap();
    assert_schema("bundle", &manifest);
    assert_eq!(manifest["features"], shipped["features"], "features: the CSV's columns but `timestamp`");
    assert_eq!(manifest["input"]["layout"], "flat", "from the model's rank-2 input");
    assert_eq!(manifest["horizon"], 1, "from the model's output");
    assert_eq!(manifest["target"]["scaler"], shipped["target"]["scaler"], "the co2 column of the input scaler");
    assert_eq!(manifest["golden"], shipped["golden"]);
    assert_eq!(manifest["reference"]["features"]["co2"].as_array().unwrap().len(), 500);
    let sha = manifest["model_sha256"].as_str().unwrap();
    let out = Command::new("sha256sum").arg(&onnx).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(sha), "model_sha256 is the file's SHA-256");
    // Reference predictions are the model's: the first window's equals `streamcast predict`'s
    // answer for the CSV's first 24 rows.
    let first_window = manifest["reference"]["predictions"][0].as_f64().unwrap();
    let out = streamcast(&[
        "predict",
        "--models",
        root.to_str().unwrap(),
        "--model",
        "mine",
        "--quiet",
        "data/co2_weekly.csv",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first: serde_json::Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|p| p["warmup"] != true)
        .unwrap();
    assert_eq!(first["id"], "row-24", "the first full window");
    assert!((first["prediction"][0].as_f64().unwrap() - first_window).abs() < 1e-4, "{first} vs {first_window}");
    let out = streamcast(&["models", "validate", "mine", "--root", root.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("checksum matches"), "{}", stderr(&out));

    // Versions are never overwritten; the next one is numbered on.
    let out = build(&["--window", "24", "--version", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    let out = build(&["--window", "24"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("computed by ONNX Runtime"), "it says where golden cases came from");
    assert!(root.join("mine/2/bundle.json").is_file());

    // A name or version that would leave the root.
    let out = build(&["--window", "24", "--version", "../escape"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--version"), "{}", stderr(&out));

    // Golden cases that the export does not reproduce: refused, and nothing is published.
    let wrong: Vec<String> = shipped["golden"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let mut g = g.clone();
            g["prediction"][0] = (g["prediction"][0].as_f64().unwrap() + 1.0).into();
            g.to_string()
        })
        .collect();
    std::fs::write(&golden, wrong.join("\n")).unwrap();
    let out = build(&["--window", "24", "--golden", golden.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("golden case 0"), "{}", stderr(&out));
    // A window the model does not take: named, and nothing is left behind.
    let out = build(&["--window", "12"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("the bundle implies [-1, 36]"), "{}", stderr(&out));
    let versions: Vec<_> = std::fs::read_dir(root.join("mine")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(versions.len(), 2, "only versions 1 and 2, no staging left: {versions:?}");
}
