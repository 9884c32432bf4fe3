"""Damaged checkpoints: every way a run directory can be broken gives a one-line
CheckpointError naming the file, never another exception; and no code unpickles."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import rnnkit
from rnnkit import CharLMConfig, TrainConfig
from rnnkit.errors import CheckpointError
from rnnkit.models.charlm import CharLM
from rnnkit.train import rundir
from rnnkit.train.trainer import LanguageModelTask, Trainer

ROOT = Path(__file__).resolve().parents[1]
TEXT = "".join(f"def f{i}(x):\n    return x * {i % 7}\n\n" for i in range(120))
FILES = [rundir.LATEST, rundir.BEST, rundir.STATE_TENSORS, rundir.CONFIG, rundir.VOCAB]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ckpt")
    corpus = root / "corpus.txt"
    corpus.write_text(TEXT)
    out = root / "run"
    rnnkit.train(corpus, out, CharLMConfig(cell="lstm", hidden_size=8, embed_size=4),
                 TrainConfig(batch_size=2, seq_len=8, max_steps=4, max_time=0, eval_every=2, sample_every=0,
                             val_fraction=0.1))
    return out


def _copy(run: Path) -> Path:
    dst = Path(tempfile.mkdtemp()) / "run"
    shutil.copytree(run, dst)
    return dst


def _restore(run: Path) -> Trainer:
    """What ``--resume`` does with a run directory, up to the first step."""
    cfg = rundir.read_config(run)
    vocab = rnnkit.data.Vocabulary.load(run / rundir.VOCAB)
    model = CharLM(CharLMConfig.from_dict(cfg["model"]), vocab)
    tcfg = TrainConfig.from_dict(cfg["train"])
    ids = torch.randint(len(vocab), (400,))
    trainer = Trainer(model, LanguageModelTask(ids, None, tcfg), tcfg, run)
    trainer.restore()
    return trainer


def _expect_checkpoint_error_or_success(fn, name: str) -> None:
    try:
        fn()
    except CheckpointError as e:
        text = str(e)
        assert "\n" not in text, text
        assert name in text or rundir.CONFIG in text or rundir.VOCAB in text, text


# -- specific damage -----------------------------------------------------------------------
def test_tensors_that_do_not_match_the_config(run):
    d = _copy(run)
    good = rundir.read_tensors(d / rundir.BEST, "w")
    name = next(iter(good))
    cases = {
        "missing": {k: v for k, v in good.items() if k != name},
        "unexpected": {**good, "extra.weight": torch.zeros(2)},
        "shape": {**good, name: torch.zeros(*good[name].shape, 2)},
        "dtype": {**good, name: good[name].double()},
    }
    for what, tensors in cases.items():
        save_file(tensors, str(d / rundir.BEST))
        with pytest.raises(CheckpointError) as e:
            rnnkit.load(d)
        msg = str(e.value)
        assert str(d / rundir.BEST) in msg and "\n" not in msg
        if what in ("shape", "dtype"):
            assert name in msg and "the config needs" in msg
        else:
            assert what in msg


@pytest.mark.parametrize("version, words", [(2, ["format_version 2", "newer", "version 1", "upgrade"]),
                                            (0, ["format_version 0", "older", "version 1"]),
                                            ("1", ["'1'", "integer 1"]), (None, ["None"])])
def test_format_version_newer_older_or_wrong_type(run, version, words):
    d = _copy(run)
    cfg = json.loads((d / rundir.CONFIG).read_text())
    cfg["format_version"] = version
    (d / rundir.CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as e:
        rnnkit.load(d)
    assert all(w in str(e.value) for w in words), str(e.value)


@pytest.mark.parametrize("edit", [
    lambda c: c.pop("model"), lambda c: c.update(model="gru"), lambda c: c.update(model=[1, 2]),
    lambda c: c["model"].update(hidden_size="big"), lambda c: c["model"].update(cell=3),
    lambda c: c["model"].update(colour="red"), lambda c: c.update(model_type=["charlm"]),
    lambda c: c.pop("model_type"), lambda c: c["model"].update(num_layers=None),
    lambda c: c.update(train="fast"),
])
def test_config_with_missing_keys_or_wrong_types(run, edit):
    d = _copy(run)
    cfg = json.loads((d / rundir.CONFIG).read_text())
    edit(cfg)
    (d / rundir.CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=re.escape(str(d / rundir.CONFIG))):
        rnnkit.load(d)
        _restore(d)


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage", "missing"])
def test_empty_truncated_garbage_or_missing_files(run, name, damage):
    d = _copy(run)
    path = d / name
    raw = path.read_bytes()
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes({"empty": b"", "truncated": raw[:len(raw) // 2], "garbage": bytes(range(256)) * 4}[damage])
    load = (lambda: rnnkit.load(d, "latest")) if name != rundir.BEST else (lambda: rnnkit.load(d, "best"))
    if name == rundir.STATE_TENSORS:
        load = lambda: _restore(d)  # noqa: E731
    if name == rundir.BEST and damage == "missing":
        rnnkit.load(d, "best")  # falls back to the latest weights
        return
    with pytest.raises(CheckpointError) as e:
        load()
    assert name in str(e.value) and "\n" not in str(e.value)


def test_resume_accepts_weights_one_checkpoint_ahead_of_the_resume_file(run, tmp_path):
    """A kill between writing model.safetensors and the resume file: resume uses the resume
    file (consistent weights, optimizer and position); load() gets the newer weights."""
    d = _copy(run)
    before = rundir.read_safetensors(d / rundir.STATE_TENSORS, "s")[1]["step"]
    newer = {k: v + 1 for k, v in rundir.read_tensors(d / rundir.LATEST, "w").items()}
    save_file(newer, str(d / rundir.LATEST), metadata={"step": str(int(before) + 1)})
    trainer = _restore(d)
    assert trainer.step == int(before)
    state_weights = rundir.read_tensors(d / rundir.STATE_TENSORS, "s")
    assert all(torch.equal(v, state_weights[f"model.{k}"]) for k, v in trainer.model.state_dict().items())
    assert torch.equal(rnnkit.load(d, "latest").state_dict()["head.weight"], newer["head.weight"])


def test_old_layout_with_files_from_different_steps_is_refused(run):
    """The layout before the self-contained resume file (state in trainer_state.json, weights in
    model.safetensors): files from different steps are refused, never mixed."""
    d = _copy(run)
    tensors, meta = rundir.read_safetensors(d / rundir.STATE_TENSORS, "s")
    old = {k: v for k, v in tensors.items() if not k.startswith("model.")}
    save_file(old, str(d / rundir.STATE_TENSORS), metadata={"step": meta["step"]})
    _restore(d)  # consistent old layout: resumes
    state = json.loads((d / rundir.STATE_JSON).read_text())
    state["step"] += 1
    (d / rundir.STATE_JSON).write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="different steps"):
        _restore(d)


def test_numpy_rng_state_out_of_range_is_a_checkpoint_error(run):
    """Found by the byte-mutation fuzz test: a digit changed inside the stored numpy RNG
    state made a number too large for uint32, and the OverflowError escaped."""
    d = _copy(run)
    tensors, meta = rundir.read_safetensors(d / rundir.STATE_TENSORS, "s")
    state = json.loads(meta["state"])
    state["rng"]["numpy"][1][0] = 4725036631
    save_file(tensors, str(d / rundir.STATE_TENSORS), metadata={**meta, "state": json.dumps(state)})
    with pytest.raises(CheckpointError, match="trainer_state.safetensors .*the trainer state is invalid"):
        _restore(d)


# -- fuzz ------------------------------------------------------------------------------------
@FUZZ
@given(name=st.sampled_from(FILES), data=st.binary(max_size=2000))
def test_fuzz_random_bytes(run, name, data):
    d = _copy(run)
    (d / name).write_bytes(data)
    _expect_checkpoint_error_or_success(lambda: (rnnkit.load(d, "best"), _restore(d)), name)
    shutil.rmtree(d.parent)


@FUZZ
@given(name=st.sampled_from(FILES), cut=st.floats(0, 1, exclude_max=True))
def test_fuzz_truncation(run, name, cut):
    d = _copy(run)
    raw = (d / name).read_bytes()
    (d / name).write_bytes(raw[:int(len(raw) * cut)])
    _expect_checkpoint_error_or_success(lambda: (rnnkit.load(d, "best"), _restore(d)), name)
    shutil.rmtree(d.parent)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from([rundir.LATEST, rundir.BEST, rundir.STATE_TENSORS, rundir.VOCAB]),
       edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8),
       header_only=st.booleans())
def test_fuzz_byte_mutations(run, name, edits, header_only):
    """Bytes overwritten at random places, half the time inside the safetensors header (its
    length, JSON, tensor offsets and the trainer state in the metadata)."""
    d = _copy(run)
    raw = bytearray((d / name).read_bytes())
    span = len(raw)
    if header_only and name.endswith(".safetensors"):
        span = 8 + int.from_bytes(raw[:8], "little")
    for where, value in edits:
        raw[int(where * span)] = value
    (d / name).write_bytes(bytes(raw))
    _expect_checkpoint_error_or_success(lambda: (rnnkit.load(d, "best"), _restore(d)), name)
    shutil.rmtree(d.parent)


# -- nothing unpickles ------------------------------------------------------------------------
def test_no_code_unpickles():
    """Scan the source tree: no pickle, no torch.load without weights_only=True, no
    numpy pickle loading (allow_ pickle)."""
    bad = []
    pickle_word = "pick" + "le"
    patterns = [re.compile(rf"^\s*(import|from)\s+(c?{pickle_word}|dill|joblib|shelve)\b"),
                re.compile(rf"\b{pickle_word}\.(loads?|Unpickler)\b"),
                re.compile(r"allow_" + pickle_word + r"\s*=\s*True")]
    torch_load = re.compile(r"\btorch\.load\s*\(")
    files = [p for top in ("rnnkit", "tests", "benchmarks") for p in (ROOT / top).rglob("*.py")]
    assert len(files) > 50
    # the tests of the drop-in contract check that a user's own pickle / torch.save(model) of
    # rnnkit modules round-trips; they unpickle only what they pickled themselves
    user_pickling = {"tests/test_dropin_pickle.py", "tests/test_word_language_model.py", "tests/moduleinfo_harness.py"}
    files = [p for p in files if str(p.relative_to(ROOT)) not in user_pickling]
    for path in files:
        text = path.read_text(encoding="utf-8")
        for n, line in enumerate(text.splitlines(), 1):
            if any(p.search(line) for p in patterns):
                bad.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
        for m in torch_load.finditer(text):
            call = text[m.start():m.start() + 300]
            depth, end = 0, len(call)
            for i, ch in enumerate(call):
                depth += ch == "("
                depth -= ch == ")"
                if ch == ")" and depth == 0:
                    end = i
                    break
            if not re.search(r"weights_only\s*=\s*True", call[:end]):
                bad.append(f"{path.relative_to(ROOT)}: {call[:end + 1]}")
    assert not bad, "unpickling code:\n" + "\n".join(bad)
