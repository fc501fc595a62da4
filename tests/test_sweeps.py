"""Sweeps: the search-space grammar, thread budgets and the summary in-process; for real
(subprocesses, tiny budgets): every preset, pruning, resume after a kill, study identity, two
workers sharing a study, the dashboard."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import compose_config, run_cli

TINY = [
    "accelerator=cpu",
    "trainer.max_epochs=1",
    "data.length=10",
    "data.train_size=400",
    "data.val_size=100",
    "data.test_size=100",
    "callbacks.progress_bar=null",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks.samples=null",
    "task=parity",
]


def _sweep_dir(cwd):
    (sweep,) = (cwd / "outputs" / "parity" / "multirun").iterdir()
    return sweep


def _results(sweep):
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/result.json")}


def _summary(sweep):
    return {row["job"]: row for row in csv.DictReader((sweep / "summary.csv").open())}


def _load_study(name: str, database: Path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=f"sqlite:///{database}")


# --- in-process -----------------------------------------------------------------------------


def test_search_space_reads_hydra_override_syntax_and_the_command_line_wins():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from hydra_plugins.rnnlab_sweeper._space import parse_search_space

    space = parse_search_space(
        {
            "optimizer.lr": "tag(log, interval(3e-4, 1e-2))",
            "model.hidden_size": "choice(64, 128, 256)",
            "model.num_layers": "range(1, 4)",
            "cell": "choice(gru, lstm)",
        },
        ["task=parity", "model.hidden_size=choice(16,32)", "cell=gru", "+model.x=a,b"],
    )
    dists = space.distributions
    assert dists["optimizer.lr"] == FloatDistribution(3e-4, 1e-2, log=True)
    assert dists["model.hidden_size"] == CategoricalDistribution(["16", "32"])  # narrowed
    assert dists["model.num_layers"] == IntDistribution(1, 3)  # range excludes its end
    assert dists["model.x"] == CategoricalDistribution(["a", "b"])
    assert "cell" not in dists and space.fixed == {"task": "task=parity", "cell": "cell=gru"}
    params = {"optimizer.lr": 0.001, "model.hidden_size": "16", "model.num_layers": 2}
    overrides = space.job_overrides({**params, "model.x": "b"})
    assert overrides == [
        "task=parity",
        "cell=gru",
        "optimizer.lr=0.001",
        "model.num_layers=2",
        "model.hidden_size=16",
        "+model.x=b",
    ]


def test_a_bad_range_names_its_key():
    from hydra_plugins.rnnlab_sweeper._space import parse_search_space
    from rnnlab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^optimizer\.lr: "):
        parse_search_space({}, ["optimizer.lr=tag(log, interval(0, 1))"])


def test_thread_budget_shares_the_cores_and_respects_the_users_cap():
    from hydra_plugins.rnnlab_sweeper._runner import thread_budget

    assert thread_budget(1, cores=2) == 2
    assert thread_budget(2, cores=2) == 1
    assert thread_budget(3, cores=2) == 1  # never 0
    assert thread_budget(2, cores=8) == 4
    assert thread_budget(1, cores=8, cap="3") == 3
    assert thread_budget(2, cores=2, cap="4") == 1


def test_pareto_preset_composes_nsga2_with_two_objectives():
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="rnnlab.configs", version_base="1.3"):
        cfg = compose(
            "train", overrides=["hparams_search=pareto", "task=parity"], return_hydra_config=True
        )
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.rnnlab_sweeper.OptunaSweeper"
    assert sweeper.sampler._target_ == "optuna.samplers.NSGAIISampler"
    assert list(sweeper.objectives) == ["metric", "params"] and sweeper.pruner == "none"
    tpe = compose_config("hparams_search=tpe", "task=parity")
    assert tpe.search_space["optimizer.lr"].startswith("tag(log")


def test_summary_lists_jobs_without_a_record_as_interrupted_or_running(tmp_path):
    from omegaconf import OmegaConf

    from rnnlab.sweeps import progress, summarize, write_summary

    for num, record in enumerate(
        [{"value": 0.6, "status": "ok"}, None, None, {"status": "failed"}]
    ):
        job = tmp_path / f"{num}-tiny"
        (job / ".hydra").mkdir(parents=True)
        OmegaConf.save({"hydra": {"job": {"num": num}}}, job / ".hydra" / "hydra.yaml")
        OmegaConf.save([f"model.hidden_size={num}"], job / ".hydra" / "overrides.yaml")
        if record:
            (job / "result.json").write_text(json.dumps({**record, "overrides": []}))
    study = {"trials": {0: {"status": "ok"}, 2: {"status": "running"}}}
    rows = summarize(tmp_path, maximize=True, study=study)
    assert [(row["job"], row["status"]) for row in rows] == [
        ("0-tiny", "ok"),
        ("1-tiny", "interrupted"),
        ("2-tiny", "running"),
        ("3-tiny", "failed"),
    ]
    assert rows[1]["overrides"] == ["model.hidden_size=1"]
    write_summary(tmp_path, rows)
    assert "| interrupted |" in (tmp_path / "summary.md").read_text()
    assert progress(4, 4) == "4 of 4 trials finished"
    assert progress(5, 4) == "5 trials finished (more than n_trials=4)"


# --- subprocesses ---------------------------------------------------------------------------


@pytest.mark.slow
def test_grid_with_a_failing_trial_completes_and_summarises_best_first(tmp_path):
    result = run_cli(
        "rnnlab",
        "-m",
        "hparams_search=grid",
        *TINY,
        "model.hidden_size=0,8,16",
        "cell=rnn,gru",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = _sweep_dir(tmp_path)
    results = _results(sweep)
    assert len(results) == 6
    failed = {job for job, r in results.items() if r["status"] == "failed"}
    assert len(failed) == 2 and all("model.hidden_size" in results[j]["error"] for j in failed)
    rows = list(csv.DictReader((sweep / "summary.csv").read_text().splitlines()))
    assert [r["status"] for r in rows] == ["ok"] * 4 + ["failed"] * 2
    values = [float(r["value"]) for r in rows[:4]]
    assert values == sorted(values, reverse=True)
    assert "summary.md" in result.stdout and "val/parity_acc" in (sweep / "summary.md").read_text()


# lr=10 wrecks the loss in one epoch (> 5), lr=1e-3 keeps it near ln 2: a pruner with a
# threshold tells them apart without depending on which trial ran first. Seeded so the four
# trials draw both values.
PRUNED_SWEEP = [
    "hparams_search=tpe",
    "hydra.sweeper.n_trials=4",
    "hydra.sweeper.sampler.seed=0",
    "hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,upper:5.0}",
    "monitor=val/loss",
    "mode=min",
    "optimizer.lr=choice(0.001,10.0)",
    "model.hidden_size=16",
    "model.num_layers=1",
    "cell=gru",
    "data.batch_size=32",
]


@pytest.fixture(scope="module")
def pruned_sweep(tmp_path_factory):
    """A 4-trial TPE sweep with a pruner, its study in a sqlite file: (cwd, sweep dir, db)."""
    cwd = tmp_path_factory.mktemp("pruned")
    database = cwd / "studies.db"
    result = run_cli(
        "rnnlab",
        "-m",
        *PRUNED_SWEEP,
        *TINY,
        "trainer.max_epochs=3",
        f"hydra.sweeper.storage=sqlite:///{database}",
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "parity-tpe: 4 of 4 trials finished" in result.stdout
    return cwd, _sweep_dir(cwd), database


@pytest.mark.slow
def test_tpe_pruner_stops_bad_trials_after_their_first_epoch(pruned_sweep):
    from optuna.trial import TrialState

    _, sweep, database = pruned_sweep
    results = _results(sweep)
    by_lr = {}
    for job, record in results.items():
        by_lr.setdefault(record["overrides"][-1], []).append((job, record))
    assert set(by_lr) == {"optimizer.lr=10.0", "optimizer.lr=0.001"}
    assert all(r["status"] == "pruned" and r["epochs"] == 1 for _, r in by_lr["optimizer.lr=10.0"])
    assert all(r["status"] == "ok" and r["epochs"] == 3 for _, r in by_lr["optimizer.lr=0.001"])
    summary = _summary(sweep)
    assert {job: summary[job]["status"] for job in results} == {
        job: r["status"] for job, r in results.items()
    }
    study = _load_study("parity-tpe", database)
    states = {trial.number: trial.state for trial in study.trials}
    for job, record in results.items():
        pruned = record["status"] == "pruned"
        assert states[int(job.split("-")[0])] == (
            TrialState.PRUNED if pruned else TrialState.COMPLETE
        )
    assert study.best_params == {"optimizer.lr": "0.001"}


@pytest.mark.slow
def test_dashboard_serves_the_sweeps_study_on_loopback(pruned_sweep):
    cwd, _, database = pruned_sweep
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "rnnlab.dashboard", f"storage={database}", f"port={port}"],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    studies = json.load(r)["study_summaries"]
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, "dashboard did not start"
                time.sleep(0.3)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert [study["study_name"] for study in studies] == ["parity-tpe"]


@pytest.mark.slow
def test_killed_sweep_resumes_refuses_another_command_and_lists_the_interrupted_trial(tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        sys.executable,
        "-m",
        "rnnlab",
        "-m",
        "hparams_search=cmaes",
        "hydra.sweeper.n_trials=3",
        f"hydra.sweep.dir={sweep}",
        *TINY,
    ]
    first = subprocess.Popen(
        args,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 240
    while time.time() < deadline and len(list(sweep.glob("*/.hydra/overrides.yaml"))) < 2:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # while its second trial runs
    first.wait()
    before = {p.parent.name: p.stat().st_mtime_ns for p in sweep.glob("*/result.json")}
    assert len(before) == 1

    other = subprocess.run(
        [*args, "model.hidden_size=choice(16,32)"], cwd=tmp_path, capture_output=True, text=True
    )
    assert other.returncode == 2
    assert (
        "search space: model.hidden_size choice(16, 32, 64, 128) -> choice(16, 32)" in other.stderr
    )
    assert "hydra.sweeper.force=true" in other.stderr and "Traceback" not in other.stderr

    second = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    after = {p.parent.name: p.stat().st_mtime_ns for p in sweep.glob("*/result.json")}
    assert all(after[job] == mtime for job, mtime in before.items())  # finished jobs not re-run
    statuses = sorted(row["status"] for row in _summary(sweep).values())
    assert statuses == ["interrupted"] + ["ok"] * 3, statuses
    assert "3 of 3 trials finished (1 interrupted)" in second.stdout


@pytest.mark.slow
def test_two_workers_share_one_study_with_per_trial_thread_budgets(tmp_path):
    """Worker A runs 2 trials at once (1 thread each on 2 cores, its env sets no cap), worker B
    one at a time; together they run n_trials trials, each once, in distinct job dirs."""
    from hydra_plugins.rnnlab_sweeper._runner import thread_budget

    database = tmp_path / "shared.db"
    args = [
        sys.executable,
        "-m",
        "rnnlab",
        "-m",
        "hparams_search=random",
        "hydra.sweeper.n_trials=5",
        f"hydra.sweeper.storage=sqlite:///{database}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        *TINY,
    ]
    uncapped = {
        k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
    }
    commands = {"A": ([*args, "hydra.sweeper.n_jobs=2"], uncapped), "B": (args, os.environ)}
    workers = {
        name: subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (command, env) in commands.items()
    }
    outputs = {name: worker.communicate(timeout=300) for name, worker in workers.items()}
    for name, worker in workers.items():
        assert worker.returncode == 0, outputs[name][1][-3000:]
    study = _load_study("parity-random", database)
    ran = [trial for trial in study.trials if trial.user_attrs.get("rnnlab:status") == "ok"]
    assert len(ran) == 5
    assert len({trial.params["optimizer.lr"] for trial in ran}) == 5  # no trial twice
    results = _results(tmp_path / "sweep")
    assert sorted(int(job.split("-")[0]) for job in results) == sorted(t.number for t in ran)
    budget = {
        f":{workers['A'].pid}": thread_budget(2),
        f":{workers['B'].pid}": thread_budget(1, cap=os.environ.get("OMP_NUM_THREADS")),
    }
    by_worker = {}
    for trial in ran:
        worker = trial.user_attrs["rnnlab:worker"]
        by_worker.setdefault(worker[worker.rindex(":") :], []).append(trial.user_attrs["threads"])
    logs = {
        name: [line for line in out.splitlines() if "trial" in line]
        for name, (out, _) in outputs.items()
    }
    # Both joined the one study; which ran how many depends on their start-up times (on a busy
    # machine the later one may find every trial taken, and then must run none).
    for name in workers:
        assert any("study parity-random in sqlite" in line for line in logs[name]), logs
    assert set(by_worker) <= set(budget) and by_worker, logs
    for pid, threads in by_worker.items():
        assert set(threads) == {budget[pid]}, pid


@pytest.mark.slow
def test_pareto_sweep_lists_a_front_of_metric_against_parameters(tmp_path):
    result = run_cli(
        "rnnlab", "-m", "hparams_search=pareto", "hydra.sweeper.n_trials=4", *TINY, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    from omegaconf import OmegaConf

    sweep = _sweep_dir(tmp_path)
    study = OmegaConf.to_container(OmegaConf.load(sweep / "optimization_results.yaml"))
    assert study["objectives"] == ["val/parity_acc", "params"]
    assert study["directions"] == ["maximize", "minimize"]
    values = {num: trial["values"] for num, trial in study["trials"].items()}
    assert all(len(v) == 2 and v[1] > 0 for v in values.values())
    front = study["pareto_front"]
    assert front
    for num in front:  # nobody beats a front member on both objectives
        acc, params = values[num]
        assert not any(
            a >= acc and p <= params and (a, p) != (acc, params) for a, p in values.values()
        )
    for num in set(values) - set(front):  # and every other trial is beaten
        acc, params = values[num]
        assert any(a >= acc and p <= params and (a, p) != (acc, params) for a, p in values.values())
    summary = (sweep / "summary.md").read_text()
    assert "Pareto front (val/parity_acc max, params min)" in summary


def test_a_pruning_metric_the_task_does_not_log_names_the_key_and_the_logged_ones():
    from types import SimpleNamespace

    from rnnlab.errors import ConfigError
    from rnnlab.sweeps import TrialReporting, reporting_to

    class Reporter:
        def report(self, epoch: int, value: float) -> bool:
            return False

        def record(self, facts: dict) -> None:
            pass

    trainer = SimpleNamespace(
        sanity_checking=False, current_epoch=0, callback_metrics={"val/char_acc": 0.5}
    )
    with reporting_to(Reporter()), pytest.raises(ConfigError, match="pruning_metric.*val/char_acc"):
        TrialReporting("val/char_accuracy").on_validation_end(trainer, None)


def test_median_pruner_judges_small_sweeps_after_fewer_startup_trials():
    from hydra_plugins.rnnlab_sweeper._loop import startup_trials

    assert [startup_trials(n) for n in (4, 16, 20, 39, 40, 200)] == [1, 2, 2, 4, 5, 5]
