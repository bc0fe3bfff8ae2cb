"""`hyperrestart report` on synthetic run directories: mean ± std over seeds, (+x.xx)/(−x.xx) deltas, CSV values,
GLUE results files, published numbers, figures and errors."""
import csv
import json

import pytest

from hyperrestart.report import aggregate as report_aggregate
from hyperrestart.report import build as report_build
from hyperrestart.report import figures as report_figures
from hyperrestart.report import runs as report_runs
from hyperrestart.sweep import jobs as sweep_jobs
from hyperrestart.report import tables as report_tables
from hyperrestart.cli import main as cli_main
from hyperrestart.core.errors import HyperrestartError

COMPARE = {"compare": {"axis": "schedule", "baseline": "no_restart"}, "seed_axis": "seed"}


def p3_run(root, name, arm, seed, rouge, index, labels=None, report_cfg=COMPARE, finished=True, losses=(2.0, 1.0)):
    run = root / name
    (run / "eval").mkdir(parents=True)
    (run / "sweep-run.json").write_text(json.dumps({"name": name, "arm": arm, "seed": seed, "index": index,
                                                    "labels": labels or {}, "report": report_cfg}))
    if finished:
        (run / sweep_jobs.COMPLETE_MARKER).write_text("{}")
    with open(run / "eval_log.csv", "w") as handle:
        handle.write("step,rougeL_micro,rougeL_macro,num_examples,num_tasks,eval_seconds\n")
        handle.write(f"0,1.0,1.0,16,4,0.1\n2,{rouge - 1},{rouge - 2},16,4,0.1\n4,{rouge},{rouge - 1},16,4,0.1\n")
    with open(run / "train_log.csv", "w") as handle:
        handle.write("step,epoch,loss,lr\n")
        for step, loss in enumerate(losses + (losses[-1] - 0.1, losses[-1] - 0.2), start=1):
            handle.write(f"{step},0,{loss},{1e-4 if step % 2 else 5e-5}\n")
    (run / "eval" / "step_4.json").write_text(json.dumps({"per_task": {"a": rouge, "b": rouge}}))
    return run


@pytest.fixture
def p3_runs(tmp_path):
    root = tmp_path / "sweep"
    for i, (schedule, seed, rouge) in enumerate([("no_restart", 1, 63.0), ("no_restart", 2, 63.5),
                                                 ("restart", 1, 64.0), ("restart", 2, 64.4),
                                                 ("worse", 1, 62.5), ("worse", 2, 62.9)]):
        p3_run(root, f"{schedule}_seed-{seed}", schedule, seed, rouge, i, {"schedule": schedule, "seed": str(seed)},
               losses=(2.0, 1.0 + seed / 10))
    return root


def test_p3_table_mean_std_and_deltas(p3_runs, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli_main(["report", str(p3_runs), "--out", str(out)]) == 0
    markdown = (out / "table.md").read_text()
    assert capsys.readouterr().out.startswith(markdown)
    lines = markdown.splitlines()
    assert lines[0] == "| Arm | n | Rouge-L |"
    # no_restart 63.0/63.5: mean 63.25, sample std 0.3536; restart 64.0/64.4: 64.20 ± 0.28, +0.95 vs no_restart
    assert lines[2] == "| no_restart | 2 | 63.25 ± 0.35 |"
    assert lines[3] == "| restart | 2 | 64.20 ± 0.28 (+0.95) |"
    assert lines[4] == "| worse | 2 | 62.70 ± 0.28 (\u22120.55) |"
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [r["arm"] for r in rows] == ["no_restart", "restart", "worse"]
    assert float(rows[0]["Rouge-L_mean"]) == pytest.approx(63.25)
    assert float(rows[0]["Rouge-L_std"]) == pytest.approx(0.353553, abs=1e-6)
    assert rows[0]["Rouge-L_delta"] == "" and rows[0]["baseline"] == ""
    assert float(rows[1]["Rouge-L_delta"]) == pytest.approx(0.95) and rows[1]["baseline"] == "no_restart"
    assert float(rows[2]["Rouge-L_delta"]) == pytest.approx(-0.55)
    runs = list(csv.DictReader((out / "runs.csv").open()))
    assert [r["run"] for r in runs][:2] == ["no_restart_seed-1", "no_restart_seed-2"]
    assert runs[0]["Rouge-L"] == "63.0" and runs[0]["step"] == "4" and runs[0]["rougeL_macro"] == "62.0"
    assert runs[0]["final_loss"] == "0.9000000000000001" and runs[0]["num_tasks"] == "2"  # 1.1 - 0.2, as logged
    for figure in ("metric_curves.png", "loss_curves.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_best_selection_digits_and_loss_column(p3_runs, capsys):
    assert cli_main(["report", str(p3_runs), "--select", "best", "--digits", "3", "--with-loss",
                     "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "| Arm | n | Rouge-L | Final loss |" in out
    assert "| no_restart | 2 | 63.250 ± 0.354 | 0.950 ± 0.071 |" in out


def test_formatting_helpers():
    assert report_tables.fmt_delta(1.234) == "(+1.23)"
    assert report_tables.fmt_delta(-0.456) == "(\u22120.46)"
    assert report_tables.fmt_delta(-0.001) == "(+0.00)"  # rounds to zero: no minus sign
    assert report_tables.fmt_value(84.875, 0.3312) == "84.88 ± 0.33"
    assert report_tables.fmt_value(84.875, None) == "84.88"


def glue_run(root, name, results, history=None, seed=None):
    run = root / name
    run.mkdir(parents=True)
    (run / "test_results.json").write_text(json.dumps(results))
    state = {"global_step": 10, "log_history": history or [
        {"loss": 3.0, "learning_rate": 3e-4, "step": 5}, {"loss": 2.0, "learning_rate": 1e-4, "step": 10},
        {"rte_eval_acc": 50.0, "eval_average_metrics": 50.0, "step": 10}]}
    (run / "trainer_state.json").write_text(json.dumps(state))
    if seed is not None:
        (run / "hyperrestart_config.json").write_text(json.dumps({"seed": seed, "output_dir": str(run)}))
    return run


def test_glue_runs_without_sweep_metadata_pair_restart_by_name(tmp_path, capsys):
    root = tmp_path / "runs"
    values = {("no_restart", 1): 70.0, ("no_restart", 2): 72.0, ("restart", 1): 74.0, ("restart", 2): 75.0}
    for (arm, seed), rte in values.items():
        glue_run(root, f"{arm}_seed{seed}", {
            "rte_eval_acc": rte, "mrpc_eval_f1": 90.0, "mrpc_eval_acc": 80.0, "cola_eval_mcc": 40.0,
            "rte_eval_loss": 0.3, "mrpc_eval_gen_len": 3.0, "eval_average_metrics": (rte + 90 + 80 + 40) / 4})
    out = tmp_path / "out"
    assert cli_main(["report", *sorted(str(p) for p in root.iterdir()), "--out", str(out)]) == 0
    lines = (out / "table.md").read_text().splitlines()
    assert lines[0] == "| Arm | n | CoLA | MRPC | RTE | Avg |"
    assert lines[2] == "| no_restart | 2 | 40.00 ± 0.00 | 85.00 ± 0.00 | 71.00 ± 1.41 | 70.25 ± 0.35 |"
    assert lines[3] == ("| restart | 2 | 40.00 ± 0.00 (+0.00) | 85.00 ± 0.00 (+0.00) | 74.50 ± 0.71 (+3.50) | "
                        "71.12 ± 0.18 (+0.88) |")
    runs = list(csv.DictReader((out / "runs.csv").open()))
    assert [(r["arm"], r["seed"], r["kind"], r["source"]) for r in runs][0] == ("no_restart", "1", "glue",
                                                                               "test_results.json")
    assert (out / "loss_curves.png").exists()


def test_glue_scores_fall_back_to_mean_over_metrics_and_trainer_state(tmp_path, capsys):
    assert report_runs.glue_scores({"stsb_eval_pearson_corrcoef": 80.0, "stsb_eval_spearman_corrcoef": 90.0,
                               "sst2_eval_acc": 94.0, "eval_loss": 1.0}) == {"stsb": 85.0, "sst2": 94.0,
                                                                            "Avg": pytest.approx(88.0)}
    run = tmp_path / "only_state"
    run.mkdir()
    (run / "trainer_state.json").write_text(json.dumps({"global_step": 4, "log_history": [
        {"loss": 1.0, "learning_rate": 1e-4, "step": 2},
        {"rte_eval_acc": 60.0, "eval_average_metrics": 60.0, "step": 2},
        {"rte_eval_acc": 66.0, "eval_average_metrics": 66.0, "step": 4}]}))
    result = report_runs.load_run(run)
    assert result.splits == {"eval": ({"rte": 66.0, "Avg": 66.0}, "trainer_state.json")}
    # log_history's learning_rate at step 2 is the lr after step 2: the one optimizer step 3 applies
    assert result.curves["metric"] == [(2, 60.0), (4, 66.0)] and result.curves["lr"] == [(3, 1e-4)]


def test_published_numbers_beside_ours(tmp_path, capsys):
    root = tmp_path / "t5"
    spec_report = {"compare": {"axis": "scheduler", "baseline": "constant"}, "published": "table5"}
    for i, (arm, seed, avg) in enumerate([("constant", 1, 83.0), ("constant", 2, 83.4), ("restart", 1, 85.0),
                                          ("restart", 2, 84.6)]):
        run = glue_run(root, f"{arm}_seed-{seed}", {"rte_eval_acc": avg, "eval_average_metrics": avg})
        (run / "sweep-run.json").write_text(json.dumps({"name": run.name, "arm": arm, "seed": seed, "index": i,
                                                        "labels": {"scheduler": arm}, "report": spec_report}))
        (run / sweep_jobs.COMPLETE_MARKER).write_text("{}")
    out = tmp_path / "out"
    assert cli_main(["report", str(root), "--published", "--out", str(out), "--no-figures"]) == 0
    lines = (out / "table.md").read_text().splitlines()
    assert lines[0] == "**Table 5: scheduler comparison, Hyperdecoders on GLUE, average**"
    assert lines[2] == "| Arm | n | RTE | Avg | Paper row | Paper Avg |"
    assert lines[4] == "| constant | 2 | 83.20 ± 0.28 | 83.20 ± 0.28 | Constant | 83.23 ± 0.29 |"
    assert lines[5] == "| restart | 2 | 84.80 ± 0.28 (+1.60) | 84.80 ± 0.28 (+1.60) | Restart | 84.88 ± 0.33 |"
    for missing in ("Cosine", "Linear", "Polynomial"):  # paper rows this sweep did not run are named
        assert f'Table 5 row "{missing}" (Avg ' in (out / "table.md").read_text()
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert rows[1]["Avg_published"] == "84.88" and rows[1]["Avg_published_std"] == "0.33"
    assert rows[1]["paper_row"] == "Restart" and rows[1]["split"] == "test"
    assert rows[1]["rte_published"] == "" and float(rows[1]["Avg_delta"]) == pytest.approx(1.6)  # full precision
    assert cli_main(["report", str(root), "--published", "table9"]) == 1
    assert "no published numbers for 'table9'" in capsys.readouterr().err


def test_published_numbers_match_paper_facts():
    def row(table, name):
        return next(r for r in report_aggregate.load_published(table)["rows"] if r["row"] == name)
    assert row("table2", "FLAN-T5")["Rouge-L"] == 63.051 and row("table2", "FLAN-T5")["Rouge-L_std"] == 0.296
    assert row("table2", "FLAN-T5 + restart")["Rouge-L"] == 64.159
    assert row("table2", "Hyperdecoders")["Rouge-L"] == 63.507
    assert row("table2", "Hyperdecoders + restart")["Rouge-L"] == 64.904
    assert row("table2", "Hyperdecoders + restart")["Rouge-L_std"] == 0.302
    assert [(r["row"], r["Avg"]) for r in report_aggregate.load_published("table1")["rows"]] == [
        ("Finetuning", 84.35), ("Finetuning + restart", 84.50), ("Hyperformer", 84.75),
        ("Hyperformer + restart", 85.91), ("Hyperformer++", 85.47), ("Hyperformer++ + restart", 85.66)]
    assert row("table5", "Linear")["Avg"] == 84.18 and row("table5", "Restart")["Avg_std"] == 0.33
    assert report_aggregate.load_published("Table 2") == report_aggregate.load_published("2") == report_aggregate.load_published("table2")


@pytest.mark.parametrize("spec, table", [("table2_p3", "table2"), ("table1_hyperformer", "table1"),
                                         ("table5_schedulers", "table5")])
def test_every_sweep_arm_maps_to_its_paper_row(spec, table):
    """The shipped sweep specs' arm names are the ones published.json maps to the paper's rows (table 1 also runs
    adapters, which the paper's Table 1 does not quote)."""
    from hyperrestart.core.paths import PROJECT_ROOT
    from hyperrestart.sweep.spec import parse_spec
    arms = {run.arm for run in parse_spec(PROJECT_ROOT / "sweeps" / f"{spec}.yaml").runs}
    mapped = {arm for row in report_aggregate.load_published(table)["rows"] for arm in row["arms"]}
    assert {arm for arm in arms if not arm.startswith("adapter")} <= mapped
    assert all(any(arm in arms for arm in row["arms"]) for row in report_aggregate.load_published(table)["rows"])


def test_unfinished_runs_are_skipped_unless_asked(tmp_path, capsys):
    root = tmp_path / "s"
    p3_run(root, "a_seed-1", "a", 1, 10.0, 0)
    p3_run(root, "a_seed-2", "a", 2, 20.0, 1, finished=False)
    assert cli_main(["report", str(root), "--no-figures"]) == 0
    captured = capsys.readouterr()
    assert "| a | 1 | 10.00 |" in captured.out and "a_seed-2: not finished" in captured.err
    assert cli_main(["report", str(root), "--no-figures", "--include-unfinished"]) == 0
    assert "| a | 2 | 15.00 ± 7.07 |" in capsys.readouterr().out


def test_errors_name_the_path(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path / "missing")]) == 1
    assert "missing is not a directory" in capsys.readouterr().err
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert cli_main(["report", str(tmp_path / "empty")]) == 1
    assert "empty holds no runs" in capsys.readouterr().err
    with pytest.raises(HyperrestartError, match="--published TABLE"):
        root = tmp_path / "nopub"
        p3_run(root, "x_seed-1", "x", 1, 1.0, 0, report_cfg={})
        report_build.build_report([root], published=True, figures=False)


# --- damaged files (issue 9) ----------------------------------------------------------------------------------------
def test_a_damaged_json_skips_its_run_with_a_warning_and_the_report_goes_on(p3_runs, tmp_path, capsys):
    (p3_runs / "restart_seed-2" / "sweep-run.json").write_text('{"name": "restart_seed-2", "arm": ')
    (p3_runs / "worse_seed-1" / "eval" / "step_4.json").write_text("{not json")  # an auxiliary file only
    out = tmp_path / "out"
    assert cli_main(["report", str(p3_runs), "--out", str(out), "--no-figures"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "warning: skipping" in captured.err and "restart_seed-2/sweep-run.json is not valid JSON" in captured.err
    assert "worse_seed-1/eval/step_4.json is not valid JSON" in captured.err
    assert "| restart | 1 | 64.00 (+0.75) |" in captured.out and "| worse | 2 | 62.70 ± 0.28" in captured.out
    assert "_1 run(s) skipped (see the warnings): restart_seed-2_" in (out / "table.md").read_text()
    runs = {r["run"]: r for r in csv.DictReader((out / "runs.csv").open())}
    assert "restart_seed-2" not in runs and runs["worse_seed-1"]["num_tasks"] == ""


def test_nothing_reportable_exits_nonzero(tmp_path, capsys):
    root = tmp_path / "runs"
    glue_run(root, "a_seed1", {"rte_eval_acc": 70.0})
    (root / "a_seed1" / "test_results.json").write_text("{")
    assert cli_main(["report", str(root)]) == 1
    err = capsys.readouterr().err
    assert "a_seed1/test_results.json is not valid JSON" in err and "error: no finished runs with metrics" in err


# --- one split per table (issue 9) ----------------------------------------------------------------------------------
def glue_split_run(root, name, test=None, eval_=None, history=()):
    run = root / name
    run.mkdir(parents=True)
    if test is not None:
        (run / "test_results.json").write_text(json.dumps({"rte_test_acc": test, "test_average_metrics": test}))
    if eval_ is not None:
        (run / "eval_results.json").write_text(json.dumps({"rte_eval_acc": eval_, "eval_average_metrics": eval_}))
    (run / "trainer_state.json").write_text(json.dumps({"global_step": 4, "log_history": list(history)}))
    return run


def test_an_arm_never_mixes_test_and_eval_scores(tmp_path, capsys):
    """restart seed 2 has only eval metrics: the table shows the eval split for every run (auto), or skips that seed
    (--split test); never the mean of one seed's test and another's eval score."""
    root = tmp_path / "runs"
    glue_split_run(root, "no_restart_seed1", test=60.0, eval_=50.0)
    glue_split_run(root, "no_restart_seed2", test=62.0, eval_=52.0)
    glue_split_run(root, "restart_seed1", test=70.0, eval_=54.0)
    glue_split_run(root, "restart_seed2", eval_=56.0)
    assert cli_main(["report", str(root), "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "| restart | 2 | 55.00 ± 1.41 (+4.00) | 55.00 ± 1.41 (+4.00) |" in out
    assert "| no_restart | 2 | 51.00 ± 1.41 | 51.00 ± 1.41 |" in out
    assert "_scores: the eval split of every run (from eval_results.json)_" in out
    assert cli_main(["report", str(root), "--no-figures", "--split", "test"]) == 0
    captured = capsys.readouterr()
    assert "| restart | 1 | 70.00 (+9.00) | 70.00 (+9.00) |" in captured.out
    assert "_scores: the test split of every run (from test_results.json)_" in captured.out
    assert "restart_seed2: it has no test metrics (only eval)" in captured.err
    assert "--split eval reports that split for every run instead" in captured.err
    glue_split_run(root, "restart_seed3", test=72.0)  # neither split covers every run: 4 and 4, test wins a tie
    assert cli_main(["report", str(root), "--no-figures", "--split", "auto"]) == 0
    captured = capsys.readouterr()
    assert "| restart | 2 | 71.00 ± 1.41" in captured.out and "restart_seed2: it has no test metrics" in captured.err
    glue_split_run(root, "restart_seed4", eval_=58.0)  # eval: 5 of 6 runs
    assert cli_main(["report", str(root), "--no-figures"]) == 0
    captured = capsys.readouterr()
    assert "| restart | 3 | 56.00 ± 2.00" in captured.out and "restart_seed3: it has no eval metrics" in captured.err


def test_trainer_state_evaluations_count_as_the_eval_split(tmp_path, capsys):
    root = tmp_path / "runs"
    glue_split_run(root, "a_seed1", test=80.0, history=[{"rte_eval_acc": 40.0, "eval_average_metrics": 40.0,
                                                        "step": 4}])
    glue_split_run(root, "a_seed2", history=[{"rte_eval_acc": 44.0, "eval_average_metrics": 44.0, "step": 4}])
    assert cli_main(["report", str(root), "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "| a | 2 | 42.00 ± 2.83 | 42.00 ± 2.83 |" in out and "(from trainer_state.json)" in out


def test_p3_split_is_the_runners_eval_split(p3_runs, capsys):
    info = {"args": {"eval_split": "test", "seed": 1}}
    (p3_runs / "worse_seed-1" / "run_config.json").write_text(json.dumps(info))
    assert cli_main(["report", str(p3_runs), "--no-figures"]) == 0
    captured = capsys.readouterr()
    assert "worse_seed-1: it has no eval metrics (only test)" in captured.err
    assert "| worse | 1 | 62.90" in captured.out and "the eval split of every run (from eval_log.csv)" in captured.out


# --- the resolved config (hyperrestart_config.json) -----------------------------------------------------------------
def test_seed_comes_from_hyperrestart_config_not_the_model_config(tmp_path):
    root = tmp_path / "runs"
    run = glue_run(root, "plain", {"rte_eval_acc": 70.0})
    (run / "config.json").write_text(json.dumps({"d_model": 8, "seed": 99}))  # the trainer's model config
    assert report_runs.load_run(run).seed is None
    (run / "hyperrestart_config.json").write_text(json.dumps({"seed": 3, "learning_rate": 3e-4}))
    assert report_runs.load_run(run).seed == 3


# --- learning rate convention: step k = optimizer step k, lr = the lr step k applied ---------------------------------
def test_lr_curves_follow_the_applied_lr_convention(tmp_path):
    history = [{"loss": 1.0, "learning_rate": lr, "step": step} for step, lr in [(1, 3e-4), (2, 2e-4), (3, 1e-4),
                                                                                 (4, 3e-4)]]
    history.append({"rte_eval_acc": 60.0, "eval_average_metrics": 60.0, "step": 4})
    run = glue_split_run(tmp_path, "hd", eval_=60.0, history=history)
    # Hugging Face logs the lr after step k: step k+1 applied it; the one after the last step is no step of this run
    assert report_runs.load_run(run).curves["lr"] == [(2, 3e-4), (3, 2e-4), (4, 1e-4)]
    (run / "lr_trace.csv").write_text("step,lr_applied\n1,3e-4\n2,3e-4\n3,2e-4\n4,1e-4\n")
    assert report_runs.load_run(run).curves["lr"] == [(1, 3e-4), (2, 3e-4), (3, 2e-4), (4, 1e-4)]
    (run / "trainer_state.json").write_text(json.dumps({"global_step": 4, "log_history": history[-1:]}))
    (run / "lr_trace.csv").write_text("step,learning_rate\n1,3e-4\n2,2e-4\n")  # the old trace: Hugging Face's values
    assert report_runs.load_run(run).curves["lr"] == [(2, 3e-4), (3, 2e-4)]
    p3 = p3_run(tmp_path, "p3", "p3", 1, 10.0, 0)
    assert report_runs.load_run(p3).curves["lr"][:2] == [(1, 1e-4), (2, 5e-5)]  # the P3 runner's lr: the applied one
    (p3 / "train_log.csv").write_text("step,loss,lr_applied\n1,2.0,7e-4\n2,1.0,6e-4\n")
    assert report_runs.load_run(p3).curves["lr"] == [(1, 7e-4), (2, 6e-4)]


# --- curves with a band over seeds (issue 10) -----------------------------------------------------------------------
@pytest.mark.slow  # draws figures (~3 s)
def test_curves_show_the_mean_and_the_spread_over_seeds(p3_runs, tmp_path):
    out = tmp_path / "out"
    assert cli_main(["report", str(p3_runs), "--out", str(out)]) == 0
    rows = [r for r in csv.DictReader((out / "metric_curves.csv").open()) if r["arm"] == "restart"]
    # restart seeds: Rouge-L 1.0/63.0/64.0 and 1.0/63.4/64.4 at steps 0, 2, 4
    assert [(r["step"], r["mean"], r["min"], r["max"], r["n_seeds"]) for r in rows] == [
        ("0", "1.0", "1.0", "1.0", "2"), ("2", "63.2", "63.0", "63.400000000000006", "2"),  # 64.4 - 1, as logged
        ("4", "64.2", "64.0", "64.4", "2")]
    loss = [r for r in csv.DictReader((out / "loss_curves.csv").open()) if r["arm"] == "no_restart"]
    assert len(loss) == 4 and loss[1]["min"] == "1.1" and loss[1]["max"] == "1.2" and loss[0]["lr_applied"] == "0.0001"
    assert (out / "metric_curves.png").read_bytes()[:4] == b"\x89PNG"

    results, _ = report_runs.choose_split(report_runs.load_runs([p3_runs]))
    _, arm_rows = report_aggregate.aggregate(results)
    bands = report_figures.curve_bands(arm_rows, "metric")
    fig = report_figures.draw_curves(arm_rows, bands, "metric")
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["no_restart (n=2)", "restart (n=2)", "worse (n=2)"]
    shaded = [c.get_paths()[0].vertices for c in ax.collections]
    assert len(shaded) == 3  # one min–max band per arm
    assert shaded[1][:, 1].min() == pytest.approx(1.0) and shaded[1][:, 1].max() == pytest.approx(64.4)
    assert "band: min–max over seeds" in ax.get_title()


def test_seed_band_uses_the_steps_every_seed_has():
    assert report_figures.seed_band([[(1, 1.0), (2, 2.0), (3, 3.0)], [(1, 3.0), (2, 4.0)], []]) == [
        (1, 2.0, 1.0, 3.0, 2), (2, 3.0, 2.0, 4.0, 2)]
    assert report_figures.seed_band([[], []]) == []


# --- the paper's rows beside ours (issue 10) ------------------------------------------------------------------------
def test_published_table2_maps_arms_to_the_papers_rows_and_says_what_has_no_counterpart(tmp_path, capsys):
    """Runs as README's per-arm loop names them (runs/p3/t5_restart ...: no sweep metadata) and one extra arm."""
    root = tmp_path / "p3"
    for i, (arm, rouge) in enumerate([("t5_no_restart", 63.0), ("t5_restart", 64.0), ("t5_eta0", 62.0)]):
        for seed in (1, 2):
            p3_run(root, f"{arm}_seed{seed}", arm, seed, rouge + seed / 10, i * 2 + seed, report_cfg={})
    out = tmp_path / "out"
    assert cli_main(["report", str(root), "--published", "table2", "--out", str(out), "--no-figures"]) == 0
    table = (out / "table.md").read_text()
    assert "| Arm | n | Rouge-L | Paper row | Paper Rouge-L |" in table
    assert "| t5_no_restart | 2 | 63.15 ± 0.07 | FLAN-T5 | 63.051 ± 0.296 |" in table
    assert "| t5_restart | 2 | 64.15 ± 0.07 (+1.00) | FLAN-T5 + restart | 64.159 ± 0.334 |" in table
    assert "| t5_eta0 | 2 | 62.15 ± 0.07 | – | – |" in table
    assert "_arm t5_eta0 has no published counterpart in Table 2_" in table
    assert ('_Table 2 row "Hyperdecoders" (Rouge-L 63.507 ± 0.201) has no arm here (it matches an arm named '
            'hyperdecoders_no_restart or hyperdecoder_no_restart or table2_hyperdecoder_no_restart)_') in table
    assert 'row "Hyperdecoders + restart" (Rouge-L 64.904 ± 0.302) has no arm here' in table
    assert "FLAN-T5" not in table.split("has no arm here")[0].split("_arm t5_eta0")[1]  # matched rows: no note
    assert cli_main(["report", str(root), "--published", "Table 1", "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "_Table 1 reports Avg, which is not a column of these runs: no published numbers shown_" in out
    assert "_arm t5_restart has no published counterpart in Table 1_" in out


@pytest.mark.slow  # bootstrap CIs and diagnostics figures (~5 s)
def test_the_report_states_evidence_per_arm_and_plots_diagnostics(p3_runs, tmp_path):
    """Each arm against its baseline: the difference, its CIs (seeds; seeds + examples from the predictions), the
    p-value of the paired t-test (both arms have seeds 1 and 2), a verdict, the seeds needed; diagnostics plotted."""
    from hyperrestart.report import evidence
    for run in sorted(p3_runs.iterdir()):
        scores = [60.0 + (i % 7) for i in range(16)]
        (run / "eval" / "step_4_predictions.jsonl").write_text(
            "".join(json.dumps({"task": "a", "rougeL": s / 100}) + "\n" for s in scores))
        (run / "diagnostics.csv").write_text(
            "step,loss,restart,hypernetwork_grad_norm,hypernetwork_update_norm,hypernetwork_lr,"
            "hypernetwork_grad_dot_update,backbone_grad_norm,backbone_update_norm,backbone_lr,backbone_grad_dot_update\n"
            "1,2.0,,1.0,0.1,0.001,,2.0,0.2,0.001,\n2,1.5,cycle 2 starts,0.9,0.1,0.001,,1.8,0.2,0.001,\n"
            "3,1.2,,0.8,0.05,0.0005,,1.7,0.1,0.001,\n")
    out = tmp_path / "out"
    assert cli_main(["report", str(p3_runs), "--out", str(out)]) == 0
    markdown = (out / "table.md").read_text()
    expected = evidence.compare({1: 64.0, 2: 64.4}, {1: 63.0, 2: 63.5})
    assert expected.test == "paired t"
    line = next(x for x in markdown.splitlines() if x.startswith("- **restart** vs no_restart: "))
    assert line == "- **restart** vs no_restart: " + evidence.format_evidence(
        evidence.compare({1: 64.0, 2: 64.4}, {1: 63.0, 2: 63.5}, *[{s: [60.0 + (i % 7) for i in range(16)]
                                                                     for s in (1, 2)}] * 2))
    assert "95% CI seeds+examples [+0.00, +0.00]" in line  # identical per-example scores in both arms
    assert "p = 0.0335 (paired t, n = 2 vs 2); restart better" in line  # differences 1.0 and 0.9: t = 19
    assert "p = 0.0577 (paired t, n = 2 vs 2); not distinguishable with n = 2 seeds" in markdown  # worse arm
    rows = list(csv.DictReader((out / "evidence.csv").open()))
    assert [r["arm"] for r in rows] == ["restart", "worse"]
    assert float(rows[0]["p_value"]) == pytest.approx(expected.p_value)
    for arm in ("restart", "no_restart", "worse"):
        assert (out / f"diagnostics_{arm}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- the paper's own tables: their n, and what their differences mean at an assumed n ---------------------------
def welch_p_by_hand(mean_a, sd_a, mean_b, sd_b, n):
    """Welch's t-test from summary statistics, written out (Welch-Satterthwaite df, two-sided)."""
    from scipy import stats
    va, vb = sd_a ** 2 / n, sd_b ** 2 / n
    t = (mean_a - mean_b) / (va + vb) ** 0.5
    df = (va + vb) ** 2 / (va ** 2 / (n - 1) + vb ** 2 / (n - 1))
    return 2 * stats.t.sf(abs(t), df)


def test_the_papers_table_alone_states_its_n_and_the_p_value_at_each_assumed_n(tmp_path, capsys):
    out = tmp_path / "paper"
    assert cli_main(["report", "--published", "table2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed == (out / "paper.md").read_text(encoding="utf-8")
    assert "(n = runs per row: not stated in the paper)" in printed
    assert "| FLAN-T5 + restart | not stated | 64.159 ± 0.334 |" in printed
    line = next(l for l in printed.splitlines() if l.startswith("| FLAN-T5 + restart vs FLAN-T5 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == "+1.108"
    for cell, n in zip(cells[2:6], (2, 3, 5, 10)):
        assert float(cell) == pytest.approx(welch_p_by_hand(64.159, 0.334, 63.051, 0.296, n), rel=5e-3)  # 3 digits
    # 0.074 at n = 2, 0.013 at n = 3: the smallest n with p < 0.05 is 3
    assert cells[6] == "3"
    assert welch_p_by_hand(64.159, 0.334, 63.051, 0.296, 2) > 0.05 > welch_p_by_hand(64.159, 0.334, 63.051, 0.296, 3)


def test_a_published_table_without_a_std_says_no_test_is_possible(capsys):
    assert cli_main(["report", "--published", "table1"]) == 0
    printed = capsys.readouterr().out
    assert "no difference in it can be tested at any n" in printed
    assert "p if n =" not in printed


def test_report_with_published_prints_the_papers_table_with_its_n_below_ours(tmp_path, capsys):
    root = tmp_path / "runs"
    for i, (arm, seed, rouge) in enumerate([("t5_no_restart", 1, 60.0), ("t5_no_restart", 2, 61.0),
                                            ("t5_restart", 1, 62.0), ("t5_restart", 2, 62.5)]):
        p3_run(root, f"{arm}_{seed}", arm, seed, rouge, i, report_cfg=None)
    assert cli_main(["report", str(root), "--published", "table2", "--no-figures"]) == 0
    printed = capsys.readouterr().out
    ours, paper = printed.split("**Table 2: P3 instruction tuning, Rouge-L, as published**")
    assert "| t5_restart | 2 |" in ours and "not stated" in paper


def test_report_needs_runs_or_a_published_table(capsys):
    assert cli_main(["report"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--published TABLE" in err[0]
    assert cli_main(["report", "--published"]) == 1
