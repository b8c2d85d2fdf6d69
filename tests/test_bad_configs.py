"""Property: any bad configuration of `hf-unlearn train` (random combinations of bad values, missing or malformed
files, output folders that are inputs) exits 0 or 2; a refusal is one line on stderr that quotes no forget text and
leaves no output folder behind, and an input is never deleted.

The recipe runs in-process on a tiny Llama and a few JSONL documents.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import make_documents

SECRET = "zebracanary"  # in every forget document; never in an error


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tokenizer):
    """A tiny model folder and forget / retain / approximate JSONL files; malformed variants of the forget file."""
    import datasets

    from hf_unlearn.testing import build_llama

    root = tmp_path_factory.mktemp("bad_configs")
    model = build_llama(len(tokenizer), hidden_size=16, layers=1, heads=2)
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    paths = {"model": str(root / "model")}
    for seed, name in enumerate(("forget", "retain", "approximate"), start=1):
        texts = make_documents(4, seed=seed)
        if name == "forget":
            texts = [f"{text} {SECRET}" for text in texts]
        paths[name] = str(root / name / f"{name}.jsonl")
        os.makedirs(os.path.dirname(paths[name]))
        with open(paths[name], "w") as handle:
            handle.writelines(json.dumps({"text": text}) + "\n" for text in texts)
    malformed = {
        "empty": "",
        "not_json": '{"text": "a ' + SECRET + '"\n',
        "no_text_column": json.dumps({SECRET: "words"}) + "\n",
        "text_not_a_string": json.dumps({"text": 48213077}) + "\n",
        "null_text": json.dumps({"text": None}) + "\n",
    }
    for name, content in malformed.items():
        paths[name] = str(root / f"{name}.jsonl")
        with open(paths[name], "w") as handle:
            handle.write(content)
    datasets.disable_progress_bars()
    yield paths
    datasets.enable_progress_bars()


def base_argv(paths) -> dict[str, str]:
    return {
        "--model_name_or_path": paths["model"],
        "--method": "ga_descent",
        "--forget_data": paths["forget"],
        "--retain_data": paths["retain"],
        "--approximate_data": paths["approximate"],
        "--max_length": "32",
        "--per_device_train_batch_size": "2",
        "--max_steps": "1",
        "--learning_rate": "1e-3",
        "--warmup_steps": "0",
        "--use_cpu": "true",
        "--report_to": "none",
        "--eval_every_steps": "1",
        "--mia_resamples": "20",
        "--stop_at_unseen_nll": "false",
        "--disable_tqdm": "true",
    }


# Each entry: a flag and the bad values it may take ("{name}" is a path of the fixture).
BAD_VALUES = {
    "--gradient_accumulation_steps": ["0", "-1", "1.5", "x"],
    "--per_device_train_batch_size": ["0", "-2", "two"],
    "--learning_rate": ["-1e-3", "nan", "inf", "abc"],
    "--max_steps": ["0", "-2", "abc"],
    "--num_train_epochs": ["0", "-1"],
    "--max_examples": ["0", "-3"],
    "--max_length": ["0", "1", "-5", "1000000", "abc"],
    "--method": ["no_such_method", ""],
    "--forget_weight": ["-1", "nan", "0"],
    "--retain_weight": ["-1", "inf"],
    "--eval_every_steps": ["0", "-1"],
    "--mia_resamples": ["-1", "abc"],
    "--max_retain_nll_increase": ["-1", "nan"],
    "--stopping_rule": ["nonsense"],
    "--stop_at_step": ["0", "-1", "abc"],
    "--retain_loss": ["nonsense"],
    "--forget_data": [
        "{missing}",
        "{empty}",
        "{not_json}",
        "{no_text_column}",
        "{text_not_a_string}",
        "{null_text}",
        f"my pasted {SECRET} words",
    ],
    "--retain_data": ["{missing}", "{empty}", "{no_text_column}"],
    "--model_name_or_path": ["{missing}", "{forget}"],
    "--config": ["{missing}", "{forget}"],
    "--no_such_option": ["1"],
}
HELP_HINT = "hf-unlearn: `--help` lists every option."  # after argparse's one line
OUTPUT_DIRS = ["fresh", "model", "forget folder"]


def resolve(value: str, paths) -> str:
    if value == "{missing}":
        return os.path.join(os.path.dirname(paths["model"]), "does_not_exist")
    if value.startswith("{") and value.endswith("}"):
        return paths[value[1:-1]]
    return value


def snapshot(folder: str) -> dict[str, int]:
    return {
        os.path.relpath(os.path.join(root, name), folder): os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(folder)
        for name in names
    }


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    bad=st.dictionaries(
        st.sampled_from(sorted(BAD_VALUES)), st.integers(min_value=0, max_value=6), min_size=1, max_size=3
    ),
    output=st.sampled_from(OUTPUT_DIRS),
    overwrite=st.booleans(),
)
def test_every_bad_configuration_exits_0_or_2_in_one_line_and_leaves_nothing_half_written(
    bad, output, overwrite, inputs, capfd
):
    from hf_unlearn.scripts.unlearn import main

    argv = base_argv(inputs)
    for flag, index in bad.items():
        values = BAD_VALUES[flag]
        argv[flag] = resolve(values[index % len(values)], inputs)
    scratch = tempfile.mkdtemp(dir=os.path.dirname(inputs["model"]), prefix="run-")
    output_dir = {
        "fresh": os.path.join(scratch, "out"),
        "model": inputs["model"],
        "forget folder": os.path.dirname(inputs["forget"]),
    }[output]
    argv["--output_dir"] = output_dir
    argv["--overwrite_output_dir"] = str(overwrite).lower()
    folders = {"model": inputs["model"], "forget": os.path.dirname(inputs["forget"])}
    folders["retain"] = os.path.dirname(inputs["retain"])
    inputs_before = {name: snapshot(folder) for name, folder in folders.items()}
    capfd.readouterr()
    try:
        main([item for pair in argv.items() for item in pair])
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    err = capfd.readouterr().err
    try:
        assert code in (0, 2), (bad, err)
        assert "Traceback" not in err and SECRET not in err and "48213077" not in err, (bad, err)
        errors = [line for line in err.splitlines() if line.startswith("hf-unlearn: error: ")]
        assert len(errors) == (1 if code == 2 else 0), (bad, err)
        if code == 2:
            tail = err.rstrip().splitlines()
            tail = tail[:-1] if tail[-1] == HELP_HINT else tail
            assert tail[-1] == errors[0], (bad, err)  # nothing after the one line but argparse's pointer to --help
            if output == "fresh":
                assert not os.path.exists(output_dir), (bad, os.listdir(output_dir))
        else:
            assert os.path.isfile(os.path.join(output_dir, "model.safetensors"))
        # An input folder is never changed, whatever --output_dir and --overwrite_output_dir say (a successful run
        # can only have written into a fresh folder).
        for name, before in inputs_before.items():
            assert snapshot(folders[name]) == before, (bad, output, name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
