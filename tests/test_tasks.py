"""The benchmark tasks follow their papers' definitions; the loop, the runner and the CLI."""

import math

import pytest
import torch

from rnnkit.cli import main
from rnnkit.errors import TrainingError
from rnnkit.tasks import (
    TASKS,
    AddingProblem,
    CopyingMemory,
    EmbeddedReber,
    HochreiterAdding,
    LoopConfig,
    TaskRunConfig,
    TemporalOrder,
    run_task,
    train_loop,
)
from rnnkit.tasks.reber import SYMBOLS, accepts, embedded_reber_string, next_symbol_sets
from rnnkit.tasks.temporal_order import SYMBOLS as TO_SYMBOLS


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# -- adding problem ---------------------------------------------------------------------------------
@pytest.mark.parametrize("T", [2, 7, 100])
def test_adding_markers_one_in_each_half_and_target_is_their_sum(T):
    batch = AddingProblem(T).sample(500, gen())
    values, markers = batch.x[..., 0], batch.x[..., 1]  # (T, B)
    assert batch.x.shape == (T, 500, 2)
    assert ((values >= 0) & (values <= 1)).all()
    assert (markers.sum(0) == 2).all()
    assert (markers[: T // 2].sum(0) == 1).all() and (markers[T // 2 :].sum(0) == 1).all()
    torch.testing.assert_close(batch.target, (values * markers).sum(0))


def test_adding_baseline_is_mse_of_predicting_one():
    task = AddingProblem(50)
    batch = task.sample(50_000, gen(1))
    assert abs(float(((batch.target - 1) ** 2).mean()) - 1 / 6) < 0.005
    assert task.baseline == pytest.approx(0.1667, abs=1e-4)


def test_hochreiter_adding_follows_the_paper():
    T = 100
    batch = HochreiterAdding(T).sample(2000, gen(2))
    lengths = batch.lengths
    assert int(lengths.min()) >= T and int(lengths.max()) <= T + T // 10
    values, markers = batch.x[..., 0], batch.x[..., 1]
    steps = torch.arange(values.shape[0]).unsqueeze(1)
    inside = steps < lengths
    assert ((values.abs() <= 1) & (inside | (values == 0))).all()
    assert (markers[~inside] == 0).all()
    plus = markers == 1
    assert (plus.sum(0) == 2).all()
    first = plus.float().argmax(0)  # first marked step
    second = (plus.float() * steps).max(0).values.long()  # last marked step
    assert (first < 10).all()  # X1 among the first ten steps
    assert (second < T // 2 - 1).all()  # X2 among the first T/2 - 1 steps
    cols = torch.arange(2000)
    last = markers[lengths - 1, cols]
    assert (last == -1).all()
    assert ((markers[0] == -1) | (first == 0)).all()
    assert (values[0, plus[0]] == 0).all() and bool(plus[0].any())  # value 0 when step 0 is marked
    assert ((markers == -1).sum(0) == 2 - plus[0].long()).all()
    x1, x2 = values[first, cols], values[second, cols]
    torch.testing.assert_close(batch.target, 0.5 + (x1 + x2) / 4)
    assert abs(float(((batch.target - 0.5) ** 2).mean()) - HochreiterAdding(T).baseline) < 0.003


def test_hochreiter_adding_solved_only_when_every_error_is_below_004():
    task = HochreiterAdding(30)
    batch = task.sample(100, gen())
    y = batch.target.unsqueeze(1) + 0.039
    assert task.evaluate(y, batch).solved
    y[7] += 0.002
    ev = task.evaluate(y, batch)
    assert not ev.solved and ev.metrics["wrong"] == 1


# -- copying memory ------------------------------------------------------------------------------------
def test_copy_sequence_layout_and_target():
    T = 15
    batch = CopyingMemory(T).sample(64, gen())
    symbols = batch.x.argmax(2)  # (T + 20, B)
    assert batch.x.shape == (T + 20, 64, 10)
    assert ((symbols[:10] >= 1) & (symbols[:10] <= 8)).all()
    assert (symbols[10 : T + 9] == 0).all() and (symbols[T + 9] == 9).all() and (symbols[T + 10 :] == 0).all()
    assert (batch.target[: T + 10] == 0).all()
    assert torch.equal(batch.target[-10:], symbols[:10])


def test_copy_baseline_is_the_cross_entropy_of_blanks_then_uniform_guess():
    T = 30
    task = CopyingMemory(T)
    batch = task.sample(200, gen())
    y = torch.full((T + 20, 200, 9), -1e4)
    y[: T + 10, :, 0] = 1e4  # certain blank before the end
    y[T + 10 :, :, 1:] = 0.0  # uniform over the 8 data symbols
    assert float(task.loss(y, batch)) == pytest.approx(10 * math.log(8) / (T + 20), rel=1e-5)
    assert task.baseline == pytest.approx(10 * math.log(8) / (T + 20))


# -- temporal order ---------------------------------------------------------------------------------------
def test_temporal_order_follows_the_paper_at_T_100():
    task = TemporalOrder(100)
    assert task.positions() == ((10, 20), (50, 60))
    batch = task.sample(1000, gen())
    symbols = batch.x.argmax(2)
    cols = torch.arange(1000)
    assert int(batch.lengths.min()) >= 100 and int(batch.lengths.max()) <= 110
    assert (symbols[0] == TO_SYMBOLS.index("E")).all()
    assert (symbols[batch.lengths - 1, cols] == TO_SYMBOLS.index("B")).all()
    xy = (symbols == TO_SYMBOLS.index("X")) | (symbols == TO_SYMBOLS.index("Y"))
    assert (xy.sum(0) == 2).all()
    t1 = xy.float().argmax(0)
    t2 = (xy.float() * torch.arange(xy.shape[0]).unsqueeze(1)).max(0).values.long()
    assert ((t1 >= 10) & (t1 <= 20) & (t2 >= 50) & (t2 <= 60)).all()
    is_y = lambda t: (symbols[t, cols] == TO_SYMBOLS.index("Y")).long()  # noqa: E731
    assert torch.equal(batch.target, 2 * is_y(t1) + is_y(t2))
    assert torch.bincount(batch.target, minlength=4).min() > 200  # all four classes
    others = symbols[1:-1][~xy[1:-1] & (torch.arange(1, xy.shape[0] - 1).unsqueeze(1) < batch.lengths - 1)]
    assert int(others.max()) <= 3  # a..d elsewhere


# -- embedded Reber grammar --------------------------------------------------------------------------------
def test_reber_strings_are_accepted_and_the_automaton_rejects_others():
    g = gen()
    strings = [embedded_reber_string(g) for _ in range(300)]
    assert all(accepts(s) for s in strings)
    assert {s[1] for s in strings} == {"T", "P"}
    assert accepts("BTBTXSETE") and accepts("BPBPVVEPE")
    for bad in ("BTBTXSEPE", "BTBTXXETE", "BTBTSETE", "BTBTXSET", "TBTXSETE"):
        assert not accepts(bad)


def test_reber_next_symbol_sets_and_the_long_range_prediction():
    sets = next_symbol_sets("BPBTXSEPE")
    assert sets == [{"T", "P"}, {"B"}, {"T", "P"}, {"S", "X"}, {"X", "S"}, {"E"}, {"P"}, {"E"}, set()]
    task = EmbeddedReber()
    batch = task.encode(["BPBTXSEPE", "BTBTXSETE"])
    assert batch.lengths.tolist() == [8, 8]
    assert batch.target[6, 0, SYMBOLS.index("P")] == 1 and batch.target[6, 0].sum() == 1
    assert batch.target[6, 1, SYMBOLS.index("T")] == 1 and batch.target[6, 1].sum() == 1


def test_reber_solved_needs_every_prediction_right():
    task = EmbeddedReber()
    batch = task.sample(64, gen())
    oracle = batch.target * 20 - 10  # logits: > 0 exactly at the legal symbols
    assert task.evaluate(oracle, batch).solved
    cols = torch.arange(64)
    wrong = oracle.clone()
    wrong[batch.lengths - 2, cols] = -10.0  # forget the branch
    ev = task.evaluate(wrong, batch)
    assert not ev.solved and ev.metrics["second_to_last_right"] == 0.0 and ev.metrics["strings_right"] == 0.0
    with pytest.raises(ValueError, match="seq_len"):
        EmbeddedReber(20)


# -- training ---------------------------------------------------------------------------------------------------
def test_lstm_solves_the_adding_problem_at_T_20():
    result = run_task(TaskRunConfig(task="adding", cell="lstm", seq_len=20, hidden_size=64, lr=1e-2,
                                    max_steps=800, max_time=None, eval_every=50, test_size=500))
    assert result.loop.solved, result.verdict
    assert result.loop.steps < 800  # stopped early, when solved
    assert result.loop.final.metrics["mse"] < 0.01
    assert "baseline 0.1667): solved" in result.verdict


def test_every_registered_cell_runs_every_task():
    for name in TASKS:
        for cell in ("jordan", "irnn", "gru"):
            r = run_task(TaskRunConfig(task=name, cell=cell, seq_len=None if name == "reber" else 12 if
                                       name != "adding-hs" else 24, hidden_size=8, max_steps=2, max_time=None,
                                       test_size=8, batch_size=4))
            assert r.loop.steps == 2 and len(r.loop.history) == 1


def test_loop_stops_on_nan_loss_and_checks_its_budget():
    model = torch.nn.Linear(1, 1)
    with pytest.raises(TrainingError, match="loss is nan"):
        train_loop(model, lambda step: model.weight.sum() * float("nan"), lambda: ({}, False, ""),
                   LoopConfig(max_steps=3))
    with pytest.raises(ValueError, match="budget"):
        LoopConfig(max_steps=None, max_time=None)


def test_loop_stops_early_when_solved():
    model = torch.nn.Linear(1, 1)
    calls = []

    def evaluate():
        calls.append(1)
        return {}, len(calls) >= 2, "x"

    r = train_loop(model, lambda step: model.weight.square().sum(), evaluate, LoopConfig(max_steps=100, eval_every=5))
    assert r.steps == 10 and r.solved


# -- CLI --------------------------------------------------------------------------------------------------------
def test_cli_task_list_and_run(capsys):
    assert main(["task", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in TASKS)
    assert main(["task", "copy", "--seq-len", "5", "--hidden-size", "8", "--max-steps", "3", "--eval-every", "3",
                 "--test-size", "10", "--cell", "gru"]) == 0
    out = capsys.readouterr().out
    assert f"(baseline {10 * math.log(8) / 25:.4g})" in out and "after 3 steps" in out


def test_cli_task_errors(capsys):
    assert main(["task", "nope", "--max-steps", "1"]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err
    assert main(["task", "adding", "--seq-len", "1", "--max-steps", "1"]) == 2
    assert "seq_len >= 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["task", "adding", "--max-time", "soon"])


def test_table_with_a_step_budget_is_the_same_on_any_machine(capsys):
    from rnnkit.tasks.table import TableConfig, format_table, run_table

    config = TableConfig(steps_per_run=6, cells=["lstm", "gru"], tasks=["adding", "temporal-order"], hidden_size=8,
                         batch_size=8)
    first, second = run_table(config), run_table(config)
    assert [r.loop.steps for r in first] == [6, 6, 6, 6]
    for a, b in zip(first, second):  # no wall clock involved: the same figures every time
        assert a.loop.final.metrics == b.loop.final.metrics
    table = format_table(first, config)
    assert "Budget: 6 training steps per cell and task" in table and "| lstm | gru |" in table
    with pytest.raises(ValueError, match="steps_per_run must be at least 1, got 0"):
        run_table(TableConfig(steps_per_run=0))
    assert main(["task", "--table", "--max-time", "5s", "--max-steps", "3"]) == 2
    assert "--table takes one budget: --max-time or --max-steps" in capsys.readouterr().err


# -- defaults, paper settings, budgets ------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TASKS))
def test_paper_settings_select_the_papers_values_and_explicit_options_override(name):
    cls = TASKS[name]
    paper, ours = cls.paper_settings, cls.defaults
    r = TaskRunConfig(task=name, cell="lstm", paper_settings=True).resolved()
    assert (r.hidden_size, r.batch_size, r.lr, r.optimizer, r.max_steps, r.eval_every, r.test_size) == (
        paper.hidden_for("lstm"), paper.batch_size, paper.lr, paper.optimizer, paper.max_steps, paper.eval_every,
        paper.test_size)
    assert r.layer_options == paper.options_for("lstm") and r.max_time is None
    assert (r.hidden_size, r.batch_size, r.lr) != (ours.hidden_size, ours.batch_size, ours.lr)
    given = TaskRunConfig(task=name, cell="lstm", paper_settings=True, hidden_size=7, lr=0.25, batch_size=3,
                          optimizer="adam", clip_norm=2.0, layer_options={}).resolved()
    assert (given.hidden_size, given.lr, given.batch_size, given.optimizer, given.clip_norm) == (7, 0.25, 3, "adam",
                                                                                                2.0)
    assert given.layer_options == {} and given.max_steps == paper.max_steps
    assert given.resolved() == given  # resolving twice changes nothing


def test_the_papers_per_cell_sizes_and_options():
    # Arjovsky et al. 2016, §4.1: 40 LSTM units, 80 for the RNNs; the authors' code clips values to ±1
    lstm = TaskRunConfig(task="copy", cell="lstm", paper_settings=True).resolved()
    rnn = TaskRunConfig(task="copy", cell="rnn", paper_settings=True).resolved()
    assert (lstm.hidden_size, rnn.hidden_size, lstm.batch_size, lstm.optimizer) == (40, 80, 20, "rmsprop")
    assert (lstm.clip_norm, lstm.clip_value) == (0.0, 1.0)
    assert (lstm.layer_options, rnn.layer_options) == ({"forget_bias": 1.0}, {})
    # Hochreiter & Schmidhuber 1997, Experiment 6a: 4 memory cells, online SGD at learning rate 0.5
    to = TaskRunConfig(task="temporal-order", cell="lstm", paper_settings=True).resolved()
    assert (to.hidden_size, to.batch_size, to.optimizer, to.lr, to.clip_norm) == (4, 1, "sgd", 0.5, 0.0)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_the_default_budget_is_the_tasks_step_budget(name):
    steps = TASKS[name].defaults.max_steps
    assert 1000 <= steps <= 5000
    r = TaskRunConfig(task=name).resolved()
    assert (r.max_steps, r.max_time) == (steps, None)
    timed = TaskRunConfig(task=name, max_time=30.0).resolved()  # a wall-clock budget alone: no step budget
    assert (timed.max_steps, timed.max_time) == (None, 30.0) and timed.resolved() == timed
    both = TaskRunConfig(task=name, max_time=30.0, max_steps=7).resolved()
    assert (both.max_steps, both.max_time) == (7, 30.0)


def test_the_lstm_of_temporal_order_starts_with_its_forget_gate_open():
    r = run_task(TaskRunConfig(task="temporal-order", cell="lstm", seq_len=10, max_steps=1, test_size=4,
                               batch_size=2, hidden_size=5))
    H = 5
    assert r.config.layer_options == {"forget_bias": 3.0}
    forget = r.model.rnn.bias_ih_l0[H : 2 * H] + r.model.rnn.bias_hh_l0[H : 2 * H]
    assert torch.allclose(forget, torch.full((H,), 3.0), atol=0.05)  # one Adam step of lr 1e-2 from 3
    gru = run_task(TaskRunConfig(task="temporal-order", cell="gru", seq_len=10, max_steps=1, test_size=4))
    assert gru.config.layer_options == {}


def test_loop_optimizers_and_element_wise_clipping():
    from rnnkit.tasks.loop import make_optimizer

    params = [torch.nn.Parameter(torch.zeros(3))]
    rms = make_optimizer(params, LoopConfig(optimizer="rmsprop", lr=0.1, max_steps=1))
    assert isinstance(rms, torch.optim.RMSprop) and rms.defaults["alpha"] == 0.9
    sgd = make_optimizer(params, LoopConfig(optimizer="sgd", lr=0.5, max_steps=1))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0
    with pytest.raises(ValueError, match="optimizer must be one of"):
        LoopConfig(optimizer="adagrad", max_steps=1)
    with pytest.raises(ValueError, match="clip_value must be positive or None, got -1"):
        LoopConfig(clip_value=-1, max_steps=1)
    # one SGD step of lr 1 on the loss 100·(w₀ - 3w₁ + 0.001w₂): gradients (100, -300, 0.1) clipped to ±1
    model = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    x = torch.tensor([[1.0, -3.0, 0.001]]) * 100
    train_loop(model, lambda step: model(x).sum(), lambda: ({}, False, ""),
               LoopConfig(optimizer="sgd", lr=1.0, clip_norm=None, clip_value=1.0, max_steps=1))
    torch.testing.assert_close(model.weight.detach(), torch.tensor([[-1.0, 1.0, -0.1]]))


def test_cli_task_paper_settings_and_list(capsys):
    assert main(["task", "--list"]) == 0
    out = capsys.readouterr().out
    for name, cls in TASKS.items():
        assert f"{name}: {cls.paper}" in out
        assert f"  defaults: {cls.defaults.describe()}" in out
        assert f"  --paper-settings ({cls.paper_settings.source}): {cls.paper_settings.describe()}" in out
    assert "hidden 80 (lstm 40), batch 20, rmsprop lr 0.001, no norm clipping, clip values to ±1" in out
    args = ["task", "copy", "--seq-len", "5", "--max-steps", "2", "--eval-every", "2", "--test-size", "4"]
    assert main([*args, "--paper-settings"]) == 0
    out = capsys.readouterr().out
    assert ("copy (T=5) with lstm: hidden 40, batch 20, rmsprop lr 0.001, clip values to ±1, forget_bias=1.0, "
            "budget 2 steps (the paper's settings)") in out
    assert main([*args, "--paper-settings", "--lr", "0.05", "--hidden-size", "6", "--clip", "0.5"]) == 0
    assert "hidden 6, batch 20, rmsprop lr 0.05, clip norm 0.5, clip values to ±1" in capsys.readouterr().out
    assert main([*args, "--cell", "gru"]) == 0
    out = capsys.readouterr().out
    assert "copy (T=5) with gru: hidden 64, batch 50, adam lr 0.01, clip norm 1, budget 2 steps (defaults)" in out


# -- the papers' table: cached, resumable, rendered --------------------------------------------------------------
def test_paper_table_runs_only_what_the_cache_lacks_and_renders_it(tmp_path, monkeypatch):
    import rnnkit.tasks.table as table

    rows = (table.PaperRow("adding", 6, 2, {"lstm": "the paper's figure"}), table.PaperRow("reber", None, 1))
    config = table.PaperTableConfig(seeds=(0, 1), cells=["lstm", "gru"], rows=rows)
    cache = table.ResultCache(tmp_path / "results.json")
    runs = []
    real_run_task = table.run_task
    monkeypatch.setattr(table, "run_task", lambda c: runs.append(c) or real_run_task(
        TaskRunConfig(**{**c.__dict__, "hidden_size": 4, "test_size": 8, "batch_size": 4})))
    first = table.PaperTableConfig(seeds=(0, 1), cells=["lstm", "gru"], rows=rows, max_runs=3)
    assert table.run_paper_table(first, cache) == 3
    assert [(r.task, r.cell, r.seed) for r in runs] == [("adding", "lstm", 0), ("adding", "lstm", 1),
                                                        ("adding", "gru", 0)]
    text, missing = table.format_paper_table(config, cache.load())
    assert missing == ["adding T=6 gru seed 1", "reber T=None lstm seed 0", "reber T=None lstm seed 1",
                       "reber T=None gru seed 0", "reber T=None gru seed 1"]
    assert "| adding (T=6) | 0.167 | lstm | 0/2 | — (budget 2) | test MSE: " in text
    assert "| the paper's figure |" in text and "|  |  | gru | 0/1 |" in text
    # the second shard of two takes every other run of the table; the cache keeps what is done
    runs.clear()
    assert table.run_paper_table(table.PaperTableConfig(seeds=(0, 1), cells=["lstm", "gru"], rows=rows, shard=1,
                                                        shards=2), cache) == 3
    assert [(r.task, r.cell, r.seed) for r in runs] == [("adding", "gru", 1), ("reber", "lstm", 1), ("reber", "gru", 1)]
    assert table.run_paper_table(config, cache) == 2 and table.run_paper_table(config, cache) == 0
    text, missing = table.format_paper_table(config, cache.load())
    assert missing == [] and text.count("\n") == 1 + 4
    assert table.paper_table_seconds(config, cache.load()) == pytest.approx(
        sum(r["seconds"] for r in cache.load().values()))
    # a solved run shows its steps and the median number of training sequences
    key = table.run_key(table.paper_runs(config)[0])
    cache.put(table.paper_runs(config)[0], {**cache.load()[key], "solved": True, "steps": 2})
    assert "| adding (T=6) | 0.167 | lstm | **1/2** | 2, — (100) |" in table.format_paper_table(config, cache.load())[0]
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(ValueError, match="not a results file of the tasks table"):
        cache.load()


def test_the_default_runs_are_seed_0_of_the_rows_at_the_task_defaults():
    import rnnkit.tasks.table as table

    rows = (table.PaperRow("adding", 100, TASKS["adding"].defaults.max_steps), table.PaperRow("adding", 200, 4000))
    config = table.PaperTableConfig(seeds=(0, 1), cells=["lstm", "rnn"], rows=rows)
    runs = table.paper_runs(config)
    assert runs[0] == TaskRunConfig(task="adding", cell="lstm").resolved()  # what `rnnkit task adding` runs
    results = {table.run_key(r): {"solved": r.cell == "lstm", "steps": 800 if r.cell == "lstm" else 3000,
                                  "seconds": 20.7, "verdict": f"verdict of {r.cell} T={r.seq_len} seed {r.seed}",
                                  "metrics": {}} for r in runs}
    assert table.format_default_runs(config, results) == (
        "$ rnnkit task adding --cell CELL\n"
        "lstm     verdict of lstm T=100 seed 0 after 800 steps in 20.7s\n"
        "rnn      verdict of rnn T=100 seed 0 after 3000 steps in 20.7s")


def test_the_unit_summary_counts_solved_seeds_and_takes_medians():
    import rnnkit.tasks.table as table

    rows = (table.PaperRow("adding", 100, 3000), table.PaperRow("copy", 100, 2000))
    config = table.PaperTableConfig(seeds=(0, 1, 2), cells=["lstm", "s6"], rows=rows)
    results = {}
    for r in table.paper_runs(config):
        if r.cell == "s6" and r.seed == 2:
            continue  # not run yet: the count says "of those run"
        solved = r.task == "adding" and r.seed != 1
        metrics = ({"mse": 0.001 * (r.seed + 1)} if r.task == "adding" else
                   {} if r.seed == 0 and r.cell == "lstm" else {"cross_entropy": 0.1 + 0.01 * r.seed,
                                                                "copy_accuracy": 0.3})
        results[table.run_key(r)] = {"solved": solved, "steps": 100 * (r.seed + 1), "seconds": 1.0,
                                     "metrics": metrics, "verdict": ""}
    text = table.format_unit_summary(config, results, cells=["lstm", "s6", "gru"])
    lines = text.splitlines()
    assert lines[0] == "| unit | adding (T=100) | copy (T=100) |"
    # lstm: seeds 0 and 2 solved adding (100 and 300 steps: median 200); copy: seed 0 diverged (sorts
    # last), so the median of (0.11, 0.12, diverged) is 0.12
    assert lines[2] == "| lstm | **2/3** in 200 steps | 0/3: CE 0.120 (30%) |"
    assert lines[3] == "| s6 | **1/2** in 100 steps | 0/2: CE 0.110 (30%) |"
    assert lines[4] == "| gru | not run | not run |"
    assert "seeds 0, 1, 2" in text and "copy: test CE (symbols copied)" in text
