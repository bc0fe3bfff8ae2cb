"""`hyperrestart report` on synthetic run directories: mean ± std over seeds, (+x.xx)/(−x.xx) deltas, CSV values,
GLUE results files, published numbers, figures and errors."""
import csv
import json

import pytest

from hyperrestart import report
from hyperrestart.cli import main as cli_main
from hyperrestart.errors import HyperrestartError

COMPARE = {"compare": {"axis": "schedule", "baseline": "no_restart"}, "seed_axis": "seed"}


def p3_run(root, name, arm, seed, rouge, index, labels=None, report_cfg=COMPARE, finished=True, losses=(2.0, 1.0)):
    run = root / name
    (run / "eval").mkdir(parents=True)
    (run / "sweep-run.json").write_text(json.dumps({"name": name, "arm": arm, "seed": seed, "index": index,
                                                    "labels": labels or {}, "report": report_cfg}))
    if finished:
        (run / report.COMPLETE_MARKER).write_text("{}")
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
    assert runs[0]["final_loss"] == "0.9" and runs[0]["num_tasks"] == "2"
    for figure in ("metric_curves.png", "loss_curves.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_best_selection_digits_and_loss_column(p3_runs, capsys):
    assert cli_main(["report", str(p3_runs), "--select", "best", "--digits", "3", "--with-loss",
                     "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "| Arm | n | Rouge-L | Final loss |" in out
    assert "| no_restart | 2 | 63.250 ± 0.354 | 0.950 ± 0.071 |" in out


def test_formatting_helpers():
    assert report.fmt_delta(1.234) == "(+1.23)"
    assert report.fmt_delta(-0.456) == "(\u22120.46)"
    assert report.fmt_delta(-0.001) == "(+0.00)"  # rounds to zero: no minus sign
    assert report.fmt_value(84.875, 0.3312) == "84.88 ± 0.33"
    assert report.fmt_value(84.875, None) == "84.88"


def glue_run(root, name, results, history=None, seed=None):
    run = root / name
    run.mkdir(parents=True)
    (run / "test_results.json").write_text(json.dumps(results))
    state = {"global_step": 10, "log_history": history or [
        {"loss": 3.0, "learning_rate": 3e-4, "step": 5}, {"loss": 2.0, "learning_rate": 1e-4, "step": 10},
        {"rte_eval_acc": 50.0, "eval_average_metrics": 50.0, "step": 10}]}
    (run / "trainer_state.json").write_text(json.dumps(state))
    if seed is not None:
        (run / "config.json").write_text(json.dumps({"seed": seed}))
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
    assert report.glue_scores({"stsb_eval_pearson_corrcoef": 80.0, "stsb_eval_spearman_corrcoef": 90.0,
                               "sst2_eval_acc": 94.0, "eval_loss": 1.0}) == {"stsb": 85.0, "sst2": 94.0,
                                                                            "Avg": pytest.approx(88.0)}
    run = tmp_path / "only_state"
    run.mkdir()
    (run / "trainer_state.json").write_text(json.dumps({"global_step": 4, "log_history": [
        {"loss": 1.0, "learning_rate": 1e-4, "step": 2},
        {"rte_eval_acc": 60.0, "eval_average_metrics": 60.0, "step": 2},
        {"rte_eval_acc": 66.0, "eval_average_metrics": 66.0, "step": 4}]}))
    result = report.load_run(run)
    assert result.scores == {"rte": 66.0, "Avg": 66.0} and result.extra["source"] == "trainer_state.json"
    assert result.curves["metric"] == [(2, 60.0), (4, 66.0)] and result.curves["lr"] == [(2, 1e-4)]


def test_published_numbers_beside_ours(tmp_path, capsys):
    root = tmp_path / "t5"
    spec_report = {"compare": {"axis": "scheduler", "baseline": "constant"}, "published": "table5"}
    for i, (arm, seed, avg) in enumerate([("constant", 1, 83.0), ("constant", 2, 83.4), ("restart", 1, 85.0),
                                          ("restart", 2, 84.6)]):
        run = glue_run(root, f"{arm}_seed-{seed}", {"rte_eval_acc": avg, "eval_average_metrics": avg})
        (run / "sweep-run.json").write_text(json.dumps({"name": run.name, "arm": arm, "seed": seed, "index": i,
                                                        "labels": {"scheduler": arm}, "report": spec_report}))
        (run / report.COMPLETE_MARKER).write_text("{}")
    out = tmp_path / "out"
    assert cli_main(["report", str(root), "--published", "--out", str(out), "--no-figures"]) == 0
    lines = (out / "table.md").read_text().splitlines()
    assert lines[0] == "**Table 5: scheduler comparison, Hyperdecoders on GLUE, average**"
    assert lines[2] == "| Arm | n | RTE | Avg | Paper Avg |"
    assert lines[4] == "| constant | 2 | 83.20 ± 0.28 | 83.20 ± 0.28 | 83.23 ± 0.29 |"
    assert lines[5] == "| restart | 2 | 84.80 ± 0.28 (+1.60) | 84.80 ± 0.28 (+1.60) | 84.88 ± 0.33 |"
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert rows[1]["Avg_published"] == "84.88" and rows[1]["Avg_published_std"] == "0.33"
    assert rows[1]["rte_published"] == "" and rows[1]["Avg_delta"] == "1.6"
    assert cli_main(["report", str(root), "--published", "table9"]) == 1
    assert "no published numbers for 'table9'" in capsys.readouterr().err


def test_published_numbers_match_paper_facts():
    table2 = report.load_published("table2")["arms"]
    assert table2["hyperdecoders_restart"] == {"Rouge-L": 64.904, "Rouge-L_std": 0.302}
    assert report.load_published("table1")["arms"]["hyperformer_restart"] == {"Avg": 85.91}
    assert report.load_published("table5")["arms"]["linear"] == {"Avg": 84.18, "Avg_std": 0.20}


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
        report.build_report([root], published=True, figures=False)
