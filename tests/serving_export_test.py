"""Tests of the SavedModel export: signature, metadata, serving without this package, atomicity, CLI."""

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from unittest import mock

import commands
import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from predict_exports import CLASS_NAMES, FEATURES, toy_preprocessing

from tf_backprop import data, training
from tf_backprop.model import MLP
from tf_backprop.serving import export
from tf_backprop.serving import served as served_lib
from tf_backprop.training import checkpoint, config

TASKS = ("regression", "binary", "multiclass")
N_OUTPUTS = {"regression": 2, "binary": 1, "multiclass": 3}
BIN = os.path.dirname(sys.executable)  # the venv's bin: saved_model_cli and the console scripts
TIMEOUT = 180  # seconds for one subprocess; TensorFlow's import alone takes ~3 s


def make_model(task: str, dtype: str = "float32", seed: int = 0) -> tuple[MLP, data.Preprocessing]:
    """An untrained MLP and non-trivial statistics, so the in-graph scaling is exercised."""
    model = MLP((len(FEATURES), 8, N_OUTPUTS[task]), activation="tanh", dtype=dtype, seed=seed)
    preprocessing = toy_preprocessing(task, [0.5, -1.5], [2.0, 0.25])
    return model, preprocessing


def raw_features(m: int = 7, seed: int = 1) -> np.ndarray:
    """Raw (unstandardized) float32 features [m, 3] around the statistics above."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(m, 3)) * [2.0, 0.5, 3.0] + [1.0, -2.0, 0.5]).astype(np.float32)


def expected_outputs(model: MLP, preprocessing: data.Preprocessing, x: np.ndarray) -> dict[str, np.ndarray]:
    """What the serving signature must return, computed eagerly with the library and NumPy."""
    forward = model.forward(preprocessing.transform_features(x), keep_intermediates=True)
    logits = forward.zs[-1].numpy().astype(np.float64)
    if preprocessing.task == "regression":
        return {"predictions": preprocessing.inverse_transform_targets(forward.output.numpy())}
    if preprocessing.task == "binary":
        return {
            "probabilities": 1.0 / (1.0 + np.exp(-logits)),
            "class_ids": (logits[:, 0] > 0).astype(np.int64),
        }
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return {"probabilities": shifted / shifted.sum(axis=1, keepdims=True), "class_ids": logits.argmax(axis=1)}


def run_command(args: list[str], cwd: str) -> subprocess.CompletedProcess:
    """Runs a command with a hard timeout; TensorFlow's C++ start-up notes held back."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return commands.run(args, cwd=cwd, env=env, timeout=TIMEOUT)  # forked if one of the package's


def listing(folder: str) -> list[str]:
    return sorted(os.listdir(folder))


class SignatureTest(tf.test.TestCase, parameterized.TestCase):
    """The exported signatures, loaded in this process with plain tf.saved_model.load."""

    def export(self, task: str, dtype: str = "float32") -> tuple[str, MLP, data.Preprocessing]:
        model, preprocessing = make_model(task, dtype)
        path = os.path.join(self.create_tempdir().full_path, "export")
        cfg = config.TrainConfig(dtype=dtype, hidden=(8,))
        self.assertEqual(export.export_saved_model(model, preprocessing, cfg, path), path)
        return path, model, preprocessing

    @parameterized.parameters(*TASKS)
    def test_outputs_equal_the_model_on_raw_features(self, task):
        path, model, preprocessing = self.export(task)
        serve = tf.saved_model.load(path).signatures["serving_default"]
        x = raw_features()
        outputs = serve(features=tf.constant(x))
        expected = expected_outputs(model, preprocessing, x)
        self.assertEqual(set(outputs), set(expected))
        for name, value in expected.items():
            self.assertAllClose(outputs[name], value, atol=1e-6, rtol=1e-6)
        if task != "regression":
            self.assertEqual(outputs["class_ids"].dtype, tf.int64)
            self.assertAllEqual(outputs["class_ids"], expected["class_ids"])
            self.assertEqual(outputs["probabilities"].shape, (len(x), N_OUTPUTS[task]))

    @parameterized.parameters(*TASKS)
    def test_signature_shapes_and_names(self, task):
        path, _, _ = self.export(task)
        signature = tf.saved_model.load(path).signatures["serving_default"]
        (spec,) = signature.structured_input_signature[1].values()
        self.assertEqual(list(signature.structured_input_signature[1]), ["features"])
        self.assertEqual(spec.dtype, tf.float32)
        self.assertEqual(spec.shape.as_list(), [None, 3])
        shapes = {name: spec.shape.as_list() for name, spec in signature.structured_outputs.items()}
        if task == "regression":
            self.assertEqual(shapes, {"predictions": [None, 2]})
        else:
            self.assertEqual(shapes, {"probabilities": [None, N_OUTPUTS[task]], "class_ids": [None]})

    def test_any_batch_size(self):
        path, model, preprocessing = self.export("regression")
        serve = tf.saved_model.load(path).signatures["serving_default"]
        for m in (1, 5, 300):
            x = raw_features(m, seed=m)
            self.assertAllClose(
                serve(features=tf.constant(x))["predictions"],
                expected_outputs(model, preprocessing, x)["predictions"],
                atol=1e-6,
                rtol=1e-6,
            )

    @parameterized.parameters(*TASKS)
    def test_float64_model_serves_float32(self, task):
        path, model, preprocessing = self.export(task, dtype="float64")
        signature = tf.saved_model.load(path).signatures["serving_default"]
        (spec,) = signature.structured_input_signature[1].values()
        self.assertEqual(spec.dtype, tf.float32)
        x = raw_features()
        outputs = signature(features=tf.constant(x))
        for name, value in expected_outputs(model, preprocessing, x).items():
            self.assertAllClose(outputs[name], value, atol=1e-6, rtol=1e-6)

    def test_metadata_signature_and_asset(self):
        path, _, preprocessing = self.export("multiclass")
        metadata = tf.saved_model.load(path).signatures["metadata"]()
        self.assertEqual([n.decode() for n in metadata["feature_names"].numpy()], FEATURES)
        self.assertEqual([n.decode() for n in metadata["class_names"].numpy()], CLASS_NAMES["multiclass"])
        self.assertEqual(metadata["task"].numpy().decode(), "multiclass")
        self.assertEqual(metadata["target_name"].numpy().decode(), "label")
        import tf_backprop

        self.assertEqual(metadata["package_version"].numpy().decode(), tf_backprop.__version__)
        self.assertEqual(
            json.loads(metadata["config_json"].numpy()), config.TrainConfig(hidden=(8,)).to_dict()
        )
        with open(os.path.join(path, "assets", "metadata.json"), encoding="utf-8") as handle:
            asset = json.load(handle)
        self.assertEqual(asset, json.loads(metadata["metadata_json"].numpy()))
        self.assertEqual(asset["preprocessing"], preprocessing.to_dict())
        self.assertEqual(asset["signatures"]["serving_default"]["inputs"]["features"]["shape"], [None, 3])

    def test_regression_metadata_has_no_class_names(self):
        path, _, _ = self.export("regression")
        metadata = tf.saved_model.load(path).signatures["metadata"]()
        self.assertEqual(metadata["class_names"].shape, (0,))
        self.assertIsNone(served_lib.load_export(path).class_names)

    def test_model_must_fit_preprocessing(self):
        model, _ = make_model("multiclass")
        _, preprocessing = make_model("binary")
        folder = self.create_tempdir().full_path
        with self.assertRaisesRegex(export.ExportError, r"do not fit .* 1 output"):
            export.export_saved_model(model, preprocessing, None, os.path.join(folder, "export"))
        self.assertEqual(listing(folder), [])


class ServesWithoutPackageTest(tf.test.TestCase):
    """One fresh Python process with tf_backprop blocked, then saved_model_cli."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.folder = tempfile.mkdtemp(prefix="export_test-")
        cls.cases, cls.expected = {}, {}
        x = raw_features(5)
        for task in TASKS:
            model, preprocessing = make_model(task)
            path = export.export_saved_model(model, preprocessing, None, os.path.join(cls.folder, task))
            cls.cases[task] = {"path": path, "x": x.tolist()}
            cls.expected[task] = expected_outputs(model, preprocessing, x)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.folder, ignore_errors=True)
        super().tearDownClass()

    def test_fresh_process_with_only_tensorflow(self):
        code = textwrap.dedent(
            """
            import sys
            sys.modules["tf_backprop"] = None  # any import of this package now fails
            import json, os
            import tensorflow as tf, keras
            report = {}
            for task, case in json.load(open(sys.argv[1])).items():
                x = tf.constant(case["x"], tf.float32)
                loaded = tf.saved_model.load(case["path"])
                outputs = loaded.signatures["serving_default"](features=x)
                metadata = loaded.signatures["metadata"]()
                layer = keras.layers.TFSMLayer(case["path"], call_endpoint="serving_default")
                with open(os.path.join(case["path"], "assets", "metadata.json")) as handle:
                    asset = json.load(handle)
                report[task] = {
                    "outputs": {k: v.numpy().tolist() for k, v in outputs.items()},
                    "layer": {k: v.numpy().tolist() for k, v in layer(x).items()},
                    "feature_names": [n.decode() for n in metadata["feature_names"].numpy()],
                    "class_names": [n.decode() for n in metadata["class_names"].numpy()],
                    "asset_feature_names": asset["feature_names"],
                }
            try:
                import tf_backprop  # noqa
            except ImportError:
                report["blocked"] = True
            print(json.dumps(report))
            """
        )
        cwd = self.create_tempdir().full_path
        cases = os.path.join(cwd, "cases.json")
        with open(cases, "w", encoding="utf-8") as handle:
            json.dump(self.cases, handle)
        result = run_command([sys.executable, "-c", code, cases], cwd)
        self.assertEqual(result.returncode, 0, result.stderr)
        report = json.loads(result.stdout.strip().splitlines()[-1])
        self.assertTrue(report.pop("blocked"))
        for task, expected in self.expected.items():
            with self.subTest(task=task):
                got = report[task]
                for source in ("outputs", "layer"):
                    self.assertEqual(set(got[source]), set(expected))
                    for name, value in expected.items():
                        self.assertAllClose(got[source][name], value, atol=1e-6, rtol=1e-6)
                self.assertEqual(got["feature_names"], FEATURES)
                self.assertEqual(got["asset_feature_names"], FEATURES)
                self.assertEqual(got["class_names"], CLASS_NAMES[task] or [])

    def test_saved_model_cli_show_and_run(self):
        cli = os.path.join(BIN, "saved_model_cli")
        cwd = self.create_tempdir().full_path
        path = self.cases["regression"]["path"]
        shown = run_command([cli, "show", "--dir", path, "--all"], cwd)
        self.assertEqual(shown.returncode, 0, shown.stderr)
        self.assertIn("signature_def['serving_default']", shown.stdout)
        self.assertIn("signature_def['metadata']", shown.stdout)
        self.assertRegex(
            shown.stdout, r"inputs\['features'\] tensor_info:\s+dtype: DT_FLOAT\s+shape: \(-1, 3\)"
        )
        self.assertIn("outputs['predictions']", shown.stdout)

        x = np.asarray(self.cases["regression"]["x"][:2])
        expression = "features=" + json.dumps(x.tolist())
        ran = run_command(
            [cli, "run", "--dir", path, "--tag_set", "serve", "--signature_def", "serving_default",
             "--input_exprs", expression],
            cwd,
        )  # fmt: skip
        self.assertEqual(ran.returncode, 0, ran.stderr)
        printed = ran.stdout.split("Result for output key predictions:")[1]
        numbers = [float(v) for v in re.findall(r"-?\d+\.\d*(?:e[-+]?\d+)?", printed)]
        self.assertAllClose(numbers, self.expected["regression"]["predictions"][:2].ravel(), atol=1e-5)


class AtomicityTest(tf.test.TestCase):
    """Refusal, replacement and injected failures: never a half-written or lost export."""

    def setUp(self):
        super().setUp()
        self.folder = self.create_tempdir().full_path
        self.path = os.path.join(self.folder, "export")
        self.model, self.preprocessing = make_model("regression", seed=0)
        self.x = raw_features()

    def write(self, seed: int = 0, overwrite: bool = False) -> str:
        model, _ = make_model("regression", seed=seed)
        return export.export_saved_model(model, self.preprocessing, None, self.path, overwrite=overwrite)

    def predictions(self) -> np.ndarray:
        return tf.saved_model.load(self.path).signatures["serving_default"](features=self.x)["predictions"]

    def expected(self, seed: int) -> np.ndarray:
        model, _ = make_model("regression", seed=seed)
        return expected_outputs(model, self.preprocessing, self.x)["predictions"]

    def test_refuses_an_existing_target_without_overwrite(self):
        self.write(seed=0)
        before = os.stat(os.path.join(self.path, "saved_model.pb")).st_mtime_ns
        with self.assertRaises(export.ExportError) as raised:
            self.write(seed=1)
        self.assertIn(self.path, str(raised.exception))
        self.assertIn("--overwrite", str(raised.exception))
        self.assertEqual(os.stat(os.path.join(self.path, "saved_model.pb")).st_mtime_ns, before)
        self.assertAllClose(self.predictions(), self.expected(0), atol=1e-6)
        self.assertEqual(listing(self.folder), ["export"])

    def test_a_parent_that_is_a_file_is_named(self):
        with open(os.path.join(self.folder, "afile"), "w") as handle:
            handle.write("mine")
        model, _ = make_model("regression", seed=0)
        target = os.path.join(self.folder, "afile", "export")
        with self.assertRaisesRegex(
            export.ExportError,
            rf"^{re.escape(target)}: cannot write the export there \({re.escape(self.folder)}/afile is a file, not a folder\)$",
        ):
            export.export_saved_model(model, self.preprocessing, None, target)
        self.assertEqual(listing(self.folder), ["afile"])

    def test_a_full_disk_is_a_failure_naming_the_target_not_an_export_error(self):
        model, _ = make_model("regression", seed=0)
        target = os.path.join(self.folder, "export")
        for code in (errno.ENOSPC, errno.EDQUOT):
            with mock.patch.object(export.os, "mkdir", side_effect=OSError(code, os.strerror(code))):
                with self.assertRaises(OSError) as raised:
                    export.export_saved_model(model, self.preprocessing, None, target)
            self.assertNotIsInstance(raised.exception, export.ExportError)
            self.assertEqual((raised.exception.errno, raised.exception.filename), (code, target))
        self.assertEqual(listing(self.folder), [])

    def test_overwrite_replaces_the_export(self):
        self.write(seed=0)
        self.write(seed=1, overwrite=True)
        self.assertAllClose(self.predictions(), self.expected(1), atol=1e-6)
        self.assertNotAllClose(self.expected(0), self.expected(1))
        self.assertEqual(listing(self.folder), ["export"])

    def test_refuses_to_replace_a_folder_that_is_not_an_export(self):
        os.makedirs(self.path)
        with open(os.path.join(self.path, "notes.txt"), "w") as handle:
            handle.write("keep me")
        for overwrite in (False, True):  # without it, not told to pass it only to be refused again
            with self.assertRaisesRegex(
                export.ExportError, "not a SavedModel folder; an export never replaces it"
            ):
                self.write(overwrite=overwrite)
        self.assertEqual(listing(self.path), ["notes.txt"])

    def test_refuses_to_replace_an_export_holding_a_file_of_the_users(self):
        self.write(seed=0)
        with open(os.path.join(self.path, "notes.txt"), "w") as handle:
            handle.write("keep me")
        with self.assertRaisesRegex(
            export.ExportError,
            rf"^{re.escape(self.path)} holds 'notes.txt', which is not part of a SavedModel; an export "
            r"never replaces it, even with overwrite=True \(--overwrite\): give another output path$",
        ):
            self.write(seed=1, overwrite=True)
        self.assertIn("notes.txt", listing(self.path))
        self.assertAllClose(self.predictions(), self.expected(0), atol=1e-6)
        self.assertEqual(listing(self.folder), ["export"])

    def test_a_file_at_the_target_is_refused_even_with_overwrite(self):
        with open(self.path, "w") as handle:
            handle.write("keep me")
        with self.assertRaisesRegex(export.ExportError, "not a SavedModel folder"):
            self.write(overwrite=True)
        with open(self.path) as handle:
            self.assertEqual(handle.read(), "keep me")

    def failing_save(self):
        """tf.saved_model.save that writes everything, then fails (as a full disk would)."""
        real_save = tf.saved_model.save

        def save(obj, export_dir, *args, **kwargs):
            real_save(obj, export_dir, *args, **kwargs)
            self.assertNotEqual(os.path.abspath(export_dir), self.path)  # writes go elsewhere
            raise OSError("injected failure")

        return mock.patch.object(tf.saved_model, "save", save)

    def test_failure_mid_write_leaves_no_target(self):
        with self.failing_save(), self.assertRaisesRegex(OSError, "injected"):
            self.write()
        self.assertEqual(listing(self.folder), [])

    def test_failure_mid_write_keeps_the_previous_export(self):
        self.write(seed=0)
        with self.failing_save(), self.assertRaisesRegex(OSError, "injected"):
            self.write(seed=1, overwrite=True)
        self.assertEqual(listing(self.folder), ["export"])
        self.assertAllClose(self.predictions(), self.expected(0), atol=1e-6)

    def test_failure_while_swapping_restores_the_previous_export(self):
        self.write(seed=0)
        real_rename = os.rename

        def rename(source, target):
            if target == self.path and ".export.tmp-" in source:  # the new export moving in
                raise OSError("injected failure")
            real_rename(source, target)

        with mock.patch.object(os, "rename", rename), self.assertRaisesRegex(OSError, "injected"):
            self.write(seed=1, overwrite=True)
        self.assertEqual(listing(self.folder), ["export"])
        self.assertAllClose(self.predictions(), self.expected(0), atol=1e-6)


class ExportRunTest(tf.test.TestCase):
    """A trained run's checkpoint through export_run and the tf-backprop-export CLI."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.workdir = tempfile.mkdtemp(prefix="export_test-run-")
        cls.result = training.train(
            config.TrainConfig(workdir=cls.workdir, epochs=2, n_samples=200, export=False), progress=False
        )
        cls.preprocessing = cls.result.datasets.preprocessing
        latest = tf.train.latest_checkpoint(os.path.join(cls.workdir, checkpoint.CHECKPOINT_DIR))
        cls.checkpoint_name = os.path.basename(latest)  # train() writes ckpt/ itself
        cls.model = checkpoint.load_model(cls.workdir)[0]  # what export_run must export

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.workdir, ignore_errors=True)
        super().tearDownClass()

    def assertServesTheModel(self, path: str, model: MLP | None = None):
        x = (
            np.random.default_rng(0)
            .normal(size=(7, len(self.preprocessing.feature_names)))
            .astype(np.float32)
        )
        served = served_lib.load_export(path)
        expected = expected_outputs(model or self.model, self.preprocessing, x)["predictions"]
        self.assertAllClose(served.predict(x)["predictions"], expected, atol=1e-6, rtol=1e-6)
        self.assertEqual(served.feature_names, self.preprocessing.feature_names)
        self.assertEqual(served.metadata["config"]["n_samples"], 200)

    def test_exports_the_trained_weights(self):
        # The end-to-end promise: the checkpoint's export serves what training produced.
        path = export.export_run(self.workdir, output=os.path.join(self.create_tempdir().full_path, "e"))
        self.assertServesTheModel(path, self.result.model)

    def test_export_run_to_a_chosen_folder(self):
        output = os.path.join(self.create_tempdir().full_path, "models", "1")
        path = export.export_run(self.workdir, output=output, checkpoint=self.checkpoint_name)
        self.assertEqual(path, output)
        self.assertServesTheModel(path)

    def test_unknown_checkpoint(self):
        output = os.path.join(self.create_tempdir().full_path, "export")
        with self.assertRaisesRegex(checkpoint.CheckpointError, "ckpt-999"):
            export.export_run(self.workdir, output=output, checkpoint="ckpt-999")
        self.assertFalse(os.path.exists(output))
        # Named before the output's own refusal: an existing export stays as it was.
        export.export_run(self.workdir, output=output)
        before = sorted(os.listdir(output))
        with self.assertRaisesRegex(checkpoint.CheckpointError, "ckpt-999"):
            export.export_run(self.workdir, output=output, checkpoint="ckpt-999")
        self.assertEqual(sorted(os.listdir(output)), before)
        self.assertServesTheModel(output)

    def test_cli_exports_then_refuses_then_overwrites(self):
        cli = os.path.join(BIN, "tf-backprop-export")
        cwd = self.create_tempdir().full_path
        default = os.path.join(self.workdir, "export")
        shutil.rmtree(default, ignore_errors=True)

        first = run_command([cli, f"--workdir={self.workdir}"], cwd)
        self.assertEqual(first.returncode, 0, first.stderr)
        self.assertIn(f"exported {default}", first.stdout)
        self.assertServesTheModel(default)

        refused = run_command([cli, f"--workdir={self.workdir}"], cwd)
        self.assertEqual(refused.returncode, 2)
        self.assertNotIn("Traceback", refused.stderr)
        (line,) = refused.stderr.strip().splitlines()
        self.assertRegex(
            line, rf"^tf-backprop-export: error: {re.escape(default)} already exists.*--overwrite"
        )

        replaced = run_command(
            [cli, f"--workdir={self.workdir}", f"--checkpoint={self.checkpoint_name}", "--overwrite"], cwd
        )
        self.assertEqual(replaced.returncode, 0, replaced.stderr)
        self.assertServesTheModel(default)
        self.assertEqual([n for n in os.listdir(self.workdir) if n.startswith(".export")], [])
        # An empty --workdir was the current folder.
        empty = run_command([cli, "--workdir="], self.workdir)
        self.assertEqual(empty.returncode, 2, empty.stderr)
        self.assertEqual(
            empty.stderr.strip(),
            "tf-backprop-export: error: flag --workdir=: expected a run folder, got nothing",
        )
        # An empty --output exported to the default folder, silently (review).
        empty = run_command([cli, f"--workdir={self.workdir}", "--output="], cwd)
        self.assertEqual(empty.returncode, 2, empty.stderr)
        self.assertEqual(
            empty.stderr.strip(),
            "tf-backprop-export: error: flag --output=: expected a folder path, got nothing",
        )
