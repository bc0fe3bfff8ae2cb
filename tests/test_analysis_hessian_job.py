"""`analyse hessian --nproc`: the units (a spectrum per space, the R term) shared by ranks give the same
hessian-<checkpoint>.json as one process, byte for byte; rank 0 assembles and removes the parts."""
import pytest
import torch
from test_analysis_core import HyperModel, hyper_loss, make_batches
from test_analysis_worker import job, saved_checkpoint

from hyperrestart.analysis import hessian_job, worker


def fresh_model():
    """Each rank builds its own model at the run's initial weights (a rank leaves its last checkpoint loaded)."""
    torch.manual_seed(0)
    return HyperModel().float()


def hessian_files(tmp_path, name, world, order, trained=True):
    folder = tmp_path / "checkpoint-5"
    if trained and not folder.exists():
        saved_checkpoint(tmp_path, fresh_model())
    batches = [{k: v.float() for k, v in b.items()} for b in make_batches()]
    checkpoints = [{"label": "init", "step": 0, "path": None}]
    if trained:
        checkpoints.append({"label": "checkpoint-5", "step": 5, "path": str(folder)})
    spec = job(tmp_path / name, "hessian", checkpoints)
    for rank in order:  # the ranks one after another: rank 0 last, as it waits for the others' parts
        worker.run(spec, fresh_model(), hyper_loss, batches, rank=rank, world=world)
    out = tmp_path / name / "out"
    assert not (out / hessian_job.PARTS_DIR).exists()
    return {p.name: p.read_bytes() for p in sorted(out.glob("hessian-*.json"))}


def test_a_rank_computes_only_its_units(tmp_path):
    model = fresh_model()
    batches = [{k: v.float() for k, v in b.items()} for b in make_batches()]
    spec = job(tmp_path, "hessian", [{"label": "init", "step": 0, "path": None}])
    worker.run(spec, model, hyper_loss, batches, rank=1, world=2)
    parts = sorted(p.name for p in (tmp_path / "out" / hessian_job.PARTS_DIR).glob("*.json"))
    # units: hypernetwork, main, backbone, r_term -> rank 1 of 2 takes main and r_term
    assert parts == ["init-main.json", "init-r_term.json"]
    assert not (tmp_path / "out" / "hessian-init.json").exists()


def test_units_shared_by_two_ranks_give_the_one_process_result(tmp_path):
    one = hessian_files(tmp_path, "one", 1, [0], trained=False)
    assert list(one) == ["hessian-init.json"] and b'"r_term"' in one["hessian-init.json"]
    assert one == hessian_files(tmp_path, "two", 2, [1, 0], trained=False)


@pytest.mark.slow  # 2 checkpoints x 3 layouts of the spectra and R terms
def test_units_shared_by_ranks_give_the_one_process_result_per_checkpoint(tmp_path):
    one = hessian_files(tmp_path, "one", 1, [0])
    assert list(one) == ["hessian-checkpoint-5.json", "hessian-init.json"]
    assert one == hessian_files(tmp_path, "two", 2, [1, 0])
    assert one == hessian_files(tmp_path, "three", 3, [2, 1, 0])


def test_units_are_every_space_then_the_r_term_per_checkpoint():
    spec = {"spaces": ["hypernetwork", "main"], "checkpoints": [{"label": "a"}, {"label": "b"}]}
    assert hessian_job.units(spec) == [(0, "hypernetwork"), (0, "main"), (0, "r_term"),
                                       (1, "hypernetwork"), (1, "main"), (1, "r_term")]
    assert hessian_job.units({"spaces": ["backbone"], "checkpoints": [{"label": "a"}]}) == [(0, "backbone")]


def test_rank_zero_waits_for_the_other_ranks(tmp_path, monkeypatch):
    world = 2
    model = fresh_model()
    batches = [{k: v.float() for k, v in b.items()} for b in make_batches()]
    spec = job(tmp_path, "hessian", [{"label": "init", "step": 0, "path": None}])
    sleeps = []

    def sleep(seconds):  # rank 1 "finishes" while rank 0 waits
        sleeps.append(seconds)
        worker.run(spec, fresh_model(), hyper_loss, batches, rank=1, world=world)

    monkeypatch.setattr(hessian_job.time, "sleep", sleep)
    worker.run(spec, model, hyper_loss, batches, rank=0, world=world)
    assert len(sleeps) == 1 and (tmp_path / "out" / "hessian-init.json").is_file()
