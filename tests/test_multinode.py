"""One run across nodes (`hyperrestart run --nnodes N --nproc-per-node K --rdzv-endpoint HOST:PORT --node-rank R`):
the layout and its refusals, SLURM's node list and submitit's JobEnvironment, the torchrun command per node, the
owner/non-owner split of the run folder, the world size kept by --resume, and the sweep's coordinated SLURM job.
The slow test starts two launchers on localhost (gloo on CPU) and checks that the run equals one `--nproc 2` run bit
for bit (lr trace, every weight of the saved model)."""
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hyperrestart import cli  # noqa: E402
from hyperrestart.core.errors import HyperrestartError  # noqa: E402
from hyperrestart.upstream import nodes, registry, run_folder  # noqa: E402
from hyperrestart.upstream.resolve import RunRequest  # noqa: E402

HD_CONFIG = ROOT / "configs" / "hyperdecoders" / "glue_restart.json"
HF_CONFIG = ROOT / "configs" / "hyperformer" / "hyperformer_restart.json"


def _request(**kwargs):
    return RunRequest(**dict(dict(config=str(HD_CONFIG), output_dir="/shared/run"), **kwargs))


# --- the SLURM node list ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, hosts", [
    ("node01", ["node01"]),
    ("node[01-03,07]", ["node01", "node02", "node03", "node07"]),
    ("gpu[8-11]", ["gpu8", "gpu9", "gpu10", "gpu11"]),
    ("gpu[008-010],cpu5", ["gpu008", "gpu009", "gpu010", "cpu5"]),
    ("a[1-2]b[01-02]", ["a1b01", "a1b02", "a2b01", "a2b02"]),
    ("n-x.dom[3],n-y", ["n-x.dom3", "n-y"]),
])
def test_nodelist_compact_forms_expand_in_order_keeping_zero_padding(text, hosts):
    assert nodes.expand_nodelist(text) == hosts


@pytest.mark.parametrize("text", ["node[3-1]", "node[a-b]", "", "node[1-]"])
def test_a_nodelist_that_cannot_be_read_is_refused(text):
    with pytest.raises(HyperrestartError):
        nodes.expand_nodelist(text)


def test_scontrol_reads_the_nodelist_when_it_is_there(tmp_path):
    fake = tmp_path / "scontrol"
    fake.write_text("#!/bin/sh\n[ \"$1 $2\" = 'show hostnames' ] && printf 'alpha\\nbeta\\n'\n", encoding="utf-8")
    fake.chmod(0o755)
    assert nodes.slurm_hostnames("whatever[1-2]", scontrol=str(fake)) == ["alpha", "beta"]
    assert nodes.slurm_hostnames("node[1-2]", scontrol="") == ["node1", "node2"]  # no scontrol: the parser


# --- the layout and its refusals ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    (dict(nnodes=2, nproc_per_node=1, rdzv_endpoint="host", node_rank=0), "give HOST:PORT"),
    (dict(nnodes=2, nproc_per_node=1, rdzv_endpoint="host:99999", node_rank=0), "port 99999 is outside 1-65535"),
    (dict(nnodes=2, nproc_per_node=1, rdzv_endpoint="host:0", node_rank=0), "port 0 is outside"),
    (dict(nnodes=2, nproc_per_node=1, rdzv_endpoint=":29400", node_rank=0), "give HOST:PORT"),
    (dict(nnodes=0, nproc_per_node=1), "--nnodes 0: give a node count >= 1"),
    (dict(nnodes=-3), "--nnodes -3: give a node count >= 1"),
    (dict(nnodes=2, nproc_per_node=0, rdzv_endpoint="h:1", node_rank=0), "--nproc-per-node 0"),
    (dict(nnodes=2, nproc=2, rdzv_endpoint="h:1", node_rank=0), "--nnodes goes with --nproc-per-node K, not --nproc"),
    (dict(nnodes=2, node_rank=0), "give --rdzv-endpoint HOST:PORT"),
    (dict(nnodes=2, rdzv_endpoint="h:1"), "give --node-rank R"),
    (dict(nnodes=2, rdzv_endpoint="h:1", node_rank=2), "--node-rank 2: give 0..1"),
    (dict(nnodes=2, rdzv_endpoint="h:1", node_rank=-1), "--node-rank -1"),
    (dict(nnodes=2, rdzv_endpoint="h:1", node_rank=0, output_dir=None), "give --output-dir"),
    (dict(nnodes=2, rdzv_endpoint="h:1", node_rank=0, rdzv_timeout=0), "--rdzv-timeout 0"),
    (dict(rdzv_endpoint="h:1"), "--rdzv-endpoint belongs to a run across nodes"),
    (dict(node_rank=1), "--node-rank belongs to a run across nodes"),
    (dict(nproc_per_node=2), "--nproc-per-node belongs to a run across nodes"),
])
def test_bad_node_options_are_refused(kwargs, message):
    with pytest.raises(HyperrestartError, match=None) as caught:
        nodes.layout(_request(**kwargs), env={})
    assert message in str(caught.value)


def test_explicit_options_make_the_layout_and_the_torchrun_command():
    layout = nodes.layout(_request(nnodes=2, nproc_per_node=4, rdzv_endpoint="node01:29400", node_rank=1), env={})
    assert (layout.nnodes, layout.nproc_per_node, layout.world_size, layout.owner) == (2, 4, 8, False)
    run_id = nodes.rendezvous_id("/shared/run", {"lr": 1}, 2, 4)
    cmd = registry.command(registry.UPSTREAMS["hyperdecoders"], "py", "c.json",
                           launcher=nodes.torchrun_args(layout, run_id))
    assert cmd == ["py", "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=4", "--rdzv_backend=c10d",
                   "--rdzv_endpoint=node01:29400", f"--rdzv_id={run_id}", "--rdzv_conf=join_timeout=300",
                   "--max_restarts=0", "finetune_trainer.py", "c.json"]
    assert nodes.parse_endpoint("[::1]:29400") == ("::1", 29400)


def test_the_rendezvous_id_changes_with_the_folder_the_config_and_the_layout():
    base = nodes.rendezvous_id("/shared/run", {"lr": 1}, 2, 1)
    assert base == nodes.rendezvous_id("/shared/run", {"lr": 1}, 2, 1)
    others = {nodes.rendezvous_id("/shared/other", {"lr": 1}, 2, 1),
              nodes.rendezvous_id("/shared/run", {"lr": 2}, 2, 1),
              nodes.rendezvous_id("/shared/run", {"lr": 1}, 2, 2), nodes.rendezvous_id("/shared/run", {"lr": 1}, 3, 1)}
    assert base not in others and len(others) == 4


SLURM_ENV = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu[007-009]", "SLURM_NNODES": "3",
             "SLURM_NODEID": "2"}


def test_the_per_node_command_comes_from_a_fake_slurm_environment(monkeypatch):
    monkeypatch.setattr(nodes.shutil, "which", lambda name: None)  # the parser, not a real scontrol
    layout = nodes.layout(_request(nnodes=3, nproc_per_node=4), env=SLURM_ENV)
    port = nodes.derived_port("4242")
    assert nodes.PORT_BASE <= port < nodes.PORT_BASE + nodes.PORT_SPAN
    assert (layout.endpoint, layout.node_rank, layout.owner, layout.source) == (("gpu007", port), 2, False, "SLURM")
    assert nodes.node_args(layout) == ["--nnodes", "3", "--nproc-per-node", "4", "--rdzv-endpoint",
                                       f"gpu007:{port}", "--node-rank", "2"]
    head = nodes.layout(_request(nnodes=3, nproc_per_node=4), env=dict(SLURM_ENV, SLURM_NODEID="0"))
    assert head.owner and head.endpoint == layout.endpoint  # every node meets at the same place
    array = nodes.layout(_request(nnodes=3), env=dict(SLURM_ENV, SLURM_ARRAY_JOB_ID="4240", SLURM_ARRAY_TASK_ID="2"))
    assert array.endpoint[1] == nodes.derived_port("4240_2")
    explicit = nodes.layout(_request(nnodes=3, rdzv_endpoint="login:1234", node_rank=0), env=SLURM_ENV)
    assert (explicit.endpoint, explicit.node_rank, explicit.source) == (("login", 1234), 0, "options")


def test_a_slurm_job_with_another_node_count_is_refused(monkeypatch):
    monkeypatch.setattr(nodes.shutil, "which", lambda name: None)
    with pytest.raises(HyperrestartError, match=r"--nnodes 2, but this SLURM job has 3 node\(s\) \(gpu007"):
        nodes.layout(_request(nnodes=2), env=SLURM_ENV)
    with pytest.raises(HyperrestartError, match="SLURM_NNODES=4 but SLURM_JOB_NODELIST"):
        nodes.layout(_request(nnodes=3), env=dict(SLURM_ENV, SLURM_NNODES="4"))


class FakeJobEnvironment:
    """What submitit.JobEnvironment() answers inside a job (hostnames, node, num_nodes, job_id)."""

    def __init__(self, hostnames, node, job_id="777"):
        self.hostnames, self.node, self.num_nodes, self.job_id = hostnames, node, len(hostnames), job_id


def test_the_per_node_command_comes_from_a_fake_submitit_job_environment():
    job_env = FakeJobEnvironment(["a01", "a02"], 1)
    layout = nodes.layout(_request(nnodes=2, nproc_per_node=8), env={}, job_environment=job_env)
    assert (layout.endpoint, layout.node_rank, layout.source) == (("a01", nodes.derived_port("777")), 1, "submitit")


# --- the run folder: owner and non-owner ---------------------------------------------------------------------------
def _fake_tree(tmp_path):
    """A materialised-looking hyperdecoders tree whose script records its argv and environment (no training)."""
    workdir = tmp_path / "dest" / "hyperdecoders" / "hyperdecoder"
    workdir.mkdir(parents=True)
    (workdir / "finetune_trainer.py").write_text("", encoding="utf-8")
    return tmp_path / "dest"


def _fake_python(tmp_path, exit_code=0, text=""):
    """A 'python' that records its arguments and prints `text` (no torchrun, no training)."""
    script = tmp_path / "fakepython"
    script.write_text(f"#!/bin/sh\necho \"$@ NODE=$HYPERRESTART_NODE_RANK/$HYPERRESTART_NNODES\" >> "
                      f"{tmp_path / 'calls.txt'}\nprintf '%s\\n' '{text}'\nexit {exit_code}\n", encoding="utf-8")
    script.chmod(0o755)
    return script


@pytest.fixture
def offline_spec(monkeypatch):
    """The argument spec without importing the upstream (its classes are read in the upstream's env)."""
    from hyperrestart.upstream import arguments, repeat, training
    monkeypatch.setattr(arguments, "argument_spec", lambda *a, **k: SimpleNamespace(kinds={}))
    monkeypatch.setattr(repeat, "versions", lambda python: {})
    monkeypatch.setattr(training, "preflight", lambda *a, **k: None)
    monkeypatch.setattr(training, "summarize", lambda *a, **k: [])
    monkeypatch.setattr(training, "alignment_warning", lambda config: None)  # loads the scheduler: torch, seconds


def _node_argv(dest, python, out, rank, *extra):
    return ["run", str(HD_CONFIG), "--dest", str(dest), "--python", str(python), "--output-dir", str(out),
            "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-endpoint", "127.0.0.1:29999", "--node-rank",
            str(rank), "--quiet", *extra]


def test_a_non_owner_launcher_writes_nothing_into_the_run_folder(tmp_path, capsys, monkeypatch, offline_spec):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    dest, python, out = _fake_tree(tmp_path), _fake_python(tmp_path), tmp_path / "run"
    assert cli.main(_node_argv(dest, python, out, 1)) == 0
    assert not out.exists(), "node 1 created the run folder"
    own = list((tmp_path / "tmp").glob("hyperrestart-node1-*"))
    assert len(own) == 1 and (own[0] / run_folder.RUN_CONFIG).is_file() and (own[0] / "train.log").is_file()
    call = (tmp_path / "calls.txt").read_text(encoding="utf-8")
    assert "--rdzv_endpoint=127.0.0.1:29999" in call and str(own[0] / run_folder.RUN_CONFIG) in call
    assert call.rstrip().endswith("NODE=1/2")  # the trainer checks the node ranks (hyperrestart_nodes.py)
    # the owner's launcher claims the folder; its rendezvous id equals node 1's (same folder, config, layout)
    out.mkdir()
    before = {p.name for p in out.iterdir()}
    assert cli.main(_node_argv(dest, python, out, 0)) == 0
    owner_call = (tmp_path / "calls.txt").read_text(encoding="utf-8").splitlines()[-1]
    run_ids = [re.search(r"--rdzv_id=(hyperrestart-\w+)", text).group(1) for text in (call, owner_call)]
    assert run_ids[0] == run_ids[1] and owner_call.rstrip().endswith("NODE=0/2")
    made = {p.name for p in out.iterdir()} - before
    assert {run_folder.MARKER, run_folder.RUN_CONFIG, "train.log"} <= made
    marker = run_folder.read_marker(out)
    assert (marker["nproc"], marker["nnodes"], marker["world_size"]) == (1, 2, 2)
    # a non-owner is not refused by the owner's lock while the owner runs
    with run_folder.RunFolderLock(out):
        assert cli.main(_node_argv(dest, python, out, 1, "--overwrite")) == 0
    assert {p.name for p in out.iterdir()} == before | made


@pytest.mark.parametrize("error, message", [
    ("RendezvousTimeoutError", "did not join the run at 127.0.0.1:29999 within 300s"),
    ("RendezvousConnectionError", "lost the rendezvous at 127.0.0.1:29999: the launcher hosting it"),
])
def test_a_rendezvous_failure_is_one_clear_line(tmp_path, capsys, monkeypatch, offline_spec, error, message):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    dest = _fake_tree(tmp_path)
    python = _fake_python(tmp_path, 1, f"torch.distributed.elastic.rendezvous.api.{error}")
    assert cli.main(_node_argv(dest, python, tmp_path / "run", 1)) == 1
    err = capsys.readouterr().err
    assert message in err and "node ranks 0..1 once each" in err and "Traceback" not in err


def test_preflight_refuses_hyperformer_and_save_on_each_node_across_nodes():
    with pytest.raises(HyperrestartError, match="hyperformer cannot train across nodes"):
        registry.check_nproc(registry.UPSTREAMS["hyperformer"], 1, 2)
    from hyperrestart.upstream import preflight
    layout = nodes.layout(_request(nnodes=2, rdzv_endpoint="h:1", node_rank=0), env={})
    with pytest.raises(HyperrestartError, match="save_on_each_node=true"):
        preflight.check_processes(registry.UPSTREAMS["hyperdecoders"], None, {"save_on_each_node": True}, layout)
    preflight.check_processes(registry.UPSTREAMS["hyperdecoders"], None, {"save_on_each_node": False}, layout)


@pytest.mark.parametrize("argv_tail, message", [
    (["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-endpoint", "host", "--node-rank", "0"], "give HOST:PORT"),
    (["--nnodes", "2", "--rdzv-endpoint", "host:99999", "--node-rank", "0"], "port 99999"),
    (["--nnodes", "0"], "--nnodes 0"),
    (["--nnodes", "2", "--nproc", "2", "--rdzv-endpoint", "h:1", "--node-rank", "0"], "not --nproc"),
    (["--nnodes", "2", "--node-rank", "0"], "give --rdzv-endpoint HOST:PORT"),
])
def test_refused_node_options_exit_non_zero_with_one_line(tmp_path, capsys, monkeypatch, argv_tail, message):
    for name in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(name)
    out = tmp_path / "run"
    assert cli.main(["run", str(HD_CONFIG), "--output-dir", str(out), *argv_tail]) == 1
    captured = capsys.readouterr()
    assert message in captured.err and "Traceback" not in captured.err and len(captured.err.strip().splitlines()) == 1
    assert not out.exists()


def test_multi_node_hyperformer_exits_with_one_line(tmp_path, capsys, offline_spec, monkeypatch):
    from hyperrestart.upstream import preflight, training
    monkeypatch.setattr(training, "preflight", preflight.preflight)
    monkeypatch.setattr(preflight.arguments, "check_config", lambda *a, **k: None)
    monkeypatch.setattr(preflight, "path_problems", lambda config: [])
    monkeypatch.setattr(preflight.ranges, "check_ranges", lambda *a, **k: None)  # loads torch: seconds
    workdir = tmp_path / "dest" / "hyperformer" / "hyperformer"
    workdir.mkdir(parents=True)
    (workdir / "finetune_t5_trainer.py").write_text("", encoding="utf-8")
    out = tmp_path / "run"
    assert cli.main(["run", str(HF_CONFIG), "--dest", str(tmp_path / "dest"), "--python", sys.executable,
                     "--output-dir", str(out), "--nnodes", "2", "--rdzv-endpoint", "127.0.0.1:29999",
                     "--node-rank", "1"]) == 1
    err = capsys.readouterr().err
    assert "--nnodes 2: hyperformer cannot train across nodes" in err and "Traceback" not in err
    assert not out.exists()


def _overlay_nodes():
    import importlib.util
    path = ROOT / "overlay" / "hyperdecoders" / "hyperdecoder" / "hyperrestart_nodes.py"
    spec = importlib.util.spec_from_file_location("hyperrestart_nodes_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_trainer_refuses_launchers_started_twice_as_one_node_rank():
    check = _overlay_nodes().node_rank_problem
    assert check(["0", "1"], 2) is None and check(["1", "0", "0", "1"], 2) is None
    assert "started as node ranks 1 x2 (launchers per rank); start each of 0..1 exactly once" in check(["1", "1"], 2)
    assert "node ranks 0 x2" in check(["0", "0", "0", "0"], 2)
    assert check(["0", "1", "1"], 2) is not None  # uneven processes per node
    assert check(["0", "1", "2"], 2) is not None


def test_the_trainer_check_is_silent_on_one_node(monkeypatch):
    module = _overlay_nodes()
    monkeypatch.delenv(module.NNODES, raising=False)
    module.check_node_ranks(None)  # no --nnodes: nothing to check, the process group is not touched


# --- resume: the world size is kept -------------------------------------------------------------------------------
def test_a_resume_keeps_the_world_size_and_may_change_the_layout(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    run_folder.write_marker(out, 2)  # a --nproc 2 run
    run_folder.check_resume_processes(out, 1, 2)  # 2 nodes x 1 process: the same world
    run_folder.check_resume_processes(out, 2, 1)
    with pytest.raises(HyperrestartError, match=r"trained on 2 process\(es\) and --nnodes 2 --nproc-per-node 2 "
                                                r"asks for 4.*N x K = 2"):
        run_folder.check_resume_processes(out, 2, 2)
    with pytest.raises(HyperrestartError, match=r"trained on 2 process\(es\) and --nproc asks for 1"):
        run_folder.check_resume_processes(out, 1, 1)
    run_folder.write_marker(out, 1, resumed=True, nnodes=2)
    assert run_folder.read_marker(out)["world_size"] == 2
    (out / run_folder.MARKER).write_text(json.dumps({"nproc": 4}), encoding="utf-8")  # a marker from before nnodes
    run_folder.check_resume_processes(out, 2, 2)
    with pytest.raises(HyperrestartError, match="asks for 2"):
        run_folder.check_resume_processes(out, 1, 2)


# --- two launchers on localhost against one --nproc 2 run ---------------------------------------------------------
def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launcher(out, *args, tmp=None):
    from test_upstream_hyperdecoders import TREE
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("HYPERRESTART_DATA_DIR", None)
    for name in [k for k in env if k.startswith("SLURM_")]:
        env.pop(name)
    if tmp:
        env["TMPDIR"] = str(tmp)
    return subprocess.Popen([sys.executable, "-m", "hyperrestart.cli", "run", str(HD_CONFIG), "--tiny", "--dest",
                             str(TREE.parent), "--python", sys.executable, "--output-dir", str(out), "--quiet", *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _two_nodes(out, port, tmp, *extra, ranks=(0, 1), timeout=60):
    node_args = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-endpoint", f"127.0.0.1:{port}",
                 "--rdzv-timeout", str(timeout)]
    procs = [_launcher(out, *node_args, "--node-rank", str(rank), *extra, tmp=tmp) for rank in ranks]
    return [(p.wait(timeout=900), p.stdout.read()) for p in procs]


@pytest.mark.slow  # two tiny runs of two processes each (~2-3 min on 2 CPU cores)
def test_two_launchers_on_localhost_equal_one_nproc_2_run(tmp_path):
    from test_upstream_hyperdecoders import _skip_reason, _weights, torch_equal
    if _skip_reason():
        pytest.skip(_skip_reason())
    started = time.monotonic()
    (tmp_path / "tmp").mkdir()
    nodes_out, single_out = tmp_path / "nodes", tmp_path / "single"
    (code0, text0), (code1, text1) = _two_nodes(nodes_out, _free_port(), tmp_path / "tmp")
    assert code0 == 0 and code1 == 0, text0[-3000:] + "\n-----\n" + text1[-3000:]
    two_nodes_seconds = time.monotonic() - started
    single = _launcher(single_out, "--nproc", "2")
    single_text = single.communicate(timeout=900)[0]
    assert single.returncode == 0, single_text[-3000:]
    assert "node 0 of 2" in text0 and "node 1 of 2: joining the run in" in text1
    # node 1's launcher wrote nothing into the run folder: its config and log are in a folder of its own
    assert len(list((tmp_path / "tmp").glob("hyperrestart-node1-*/train.log"))) == 1
    marker = run_folder.read_marker(nodes_out)
    assert (marker["nnodes"], marker["nproc"], marker["world_size"]) == (2, 1, 2)
    # both global ranks trained, each on its own shard, as under --nproc 2
    logs = (nodes_out / "train.log").read_text() + next((tmp_path / "tmp").glob("hyperrestart-node1-*")).joinpath(
        "train.log").read_text()
    ranks = sorted(re.findall(r"Process rank (\d) of (\d) trained on (\d+) examples \(input_ids sha1 (\w+)\)", logs))
    single_ranks = sorted(re.findall(r"Process rank (\d) of (\d) trained on (\d+) examples \(input_ids sha1 (\w+)\)",
                                     (single_out / "train.log").read_text()))
    assert len(ranks) == 2 and ranks == single_ranks
    assert (nodes_out / "lr_trace.csv").read_text() == (single_out / "lr_trace.csv").read_text()
    expected, final = _weights(single_out / "model.safetensors"), _weights(nodes_out / "model.safetensors")
    assert expected.keys() == final.keys() and expected
    for name in expected:
        assert torch_equal(expected[name], final[name]), f"{name} differs between 2 nodes x 1 and --nproc 2"
    print(f"two launchers: {two_nodes_seconds:.0f}s; --nproc 2: {time.monotonic() - started - two_nodes_seconds:.0f}s")


@pytest.mark.slow  # three 15 s waits for a node that never comes (~3-5 min with the launchers' start)
def test_mismatched_launchers_fail_clearly_instead_of_hanging(tmp_path):
    from test_upstream_hyperdecoders import _skip_reason
    if _skip_reason():
        pytest.skip(_skip_reason())
    (tmp_path / "tmp").mkdir()
    # the same node rank twice: the second owner is refused at once (by the run lock, or by the marker the first
    # wrote: the folder holds a run), the first times out
    results = _two_nodes(tmp_path / "same", _free_port(), tmp_path / "tmp", ranks=(0, 0), timeout=15)
    assert sorted(code for code, _ in results) == [1, 1], results
    refused = [text for _, text in results if "did not join the run at 127.0.0.1" not in text]
    assert len(refused) == 1 and ("is being written by another `hyperrestart run`" in refused[0]
                                  or "already holds a run made by hyperrestart" in refused[0]), results
    assert "Traceback" not in "\n".join(text for _, text in results)
    # node rank 1 twice (no owner): they meet, and the trainer refuses before writing anything
    results = _two_nodes(tmp_path / "none", _free_port(), tmp_path / "tmp", ranks=(1, 1), timeout=60)
    assert [code for code, _ in results] == [1, 1], results
    assert all("started as node ranks 1 x2" in text for _, text in results), results
    assert not (tmp_path / "none").exists()
    # another run folder, or another config: another rendezvous id, so neither joins the other; both time out
    port = _free_port()
    node_args = ["--nnodes", "2", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-timeout", "15"]
    for out_b, extra_b in ((tmp_path / "b", []), (tmp_path / "a", ["--set", "learning_rate=1e-3"])):
        first = _launcher(tmp_path / "a", *node_args, "--node-rank", "0", "--overwrite", tmp=tmp_path / "tmp")
        second = _launcher(out_b, *node_args, "--node-rank", "1", *extra_b, tmp=tmp_path / "tmp")
        outs = [p.communicate(timeout=300)[0] for p in (first, second)]
        assert first.returncode == 1 and second.returncode == 1, outs
        # each waits for its own run: it times out, or loses the rendezvous when the launcher hosting it (another
        # run's, first to bind the port) stops
        assert all(("did not join the run at" in text or "lost the rendezvous at" in text) and "Traceback" not in text
                   for text in outs), outs
        assert any("did not join the run at" in text for text in outs), outs


# --- a sweep's SLURM job across nodes -----------------------------------------------------------------------------
NODES_SPEC = """
runner: run
config: configs/hyperdecoders/glue_restart.json
args: [--tiny]
grid: {seed: [1]}
slurm: {nodes: 2, gpus: 4, partition: gpu}
"""


def _sweep_jobs(tmp_path, text=NODES_SPEC):
    from hyperrestart.sweep import jobs as sweep_jobs
    from hyperrestart.sweep import spec as sweep_spec
    path = tmp_path / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    spec = sweep_spec.parse_spec(path)
    return spec, sweep_jobs.make_jobs(spec, tmp_path / "out")


def test_a_two_node_spec_submits_one_job_of_two_nodes_one_task_each(tmp_path, monkeypatch):
    import submitit
    from hyperrestart.sweep import launch as sweep_launch
    spec, jobs = _sweep_jobs(tmp_path)
    params = sweep_launch.executor_parameters(spec.slurm)
    assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"]) == (2, 1, 4)
    seen = {}

    class FakeExecutor:
        cluster = "slurm"

        def __init__(self, folder, cluster=None):
            seen["folder"] = folder

        def update_parameters(self, **kwargs):
            seen["params"] = kwargs

        def map_array(self, fn, jobs_):
            seen["fn"], seen["jobs"] = fn, jobs_
            return [SimpleNamespace(job_id="1") for _ in jobs_]

    monkeypatch.setattr(submitit, "AutoExecutor", FakeExecutor)
    submitted, skipped = sweep_launch.launch_submitit(jobs, tmp_path / "out", spec.slurm)
    assert len(submitted) == 1 and skipped == 0 and seen["params"]["nodes"] == 2
    assert [(j.nodes, j.nproc_per_node) for j in seen["jobs"]] == [(2, 4)]
    assert seen["fn"].__name__ == "execute_submitted"


def test_each_node_of_the_job_starts_its_part_of_one_coordinated_run(tmp_path, monkeypatch):
    import dataclasses
    from hyperrestart.sweep import jobs as sweep_jobs
    _, jobs = _sweep_jobs(tmp_path)
    job = dataclasses.replace(jobs[0], nodes=2, nproc_per_node=4)
    commands = []
    monkeypatch.setattr(sweep_jobs.subprocess, "run", lambda command, **kwargs: (
        commands.append(command), subprocess.CompletedProcess(command, 0))[1])
    run_dir = Path(job.run_dir)
    # node 1 first: it writes nothing into the run folder (not even the sweep lock)
    assert sweep_jobs.execute_submitted(job, FakeJobEnvironment(["gpu01", "gpu02"], 1, "555")) == "joined"
    assert not run_dir.exists()
    assert sweep_jobs.execute_submitted(job, FakeJobEnvironment(["gpu01", "gpu02"], 0, "555")) == "done"
    assert sweep_jobs.completion(run_dir) is not None and (run_dir / sweep_jobs.RUN_INFO).is_file()
    port = nodes.derived_port("555")
    for command, rank in zip(commands, ("1", "0")):
        tail = command[command.index("--nnodes"):]
        assert tail[:8] == ["--nnodes", "2", "--nproc-per-node", "4", "--rdzv-endpoint", f"gpu01:{port}",
                            "--node-rank", rank]
        assert command.count("--nproc") == 0 and command[command.index("--output-dir") + 1] == str(run_dir)
    assert [c for c in commands[0] if c not in ("0", "1")] == [c for c in commands[1] if c not in ("0", "1")]
    # a finished run is skipped on every node
    assert sweep_jobs.execute_submitted(job, FakeJobEnvironment(["gpu01", "gpu02"], 1, "555")) == "skipped"
    assert len(commands) == 2


@pytest.mark.parametrize("slurm, args, message", [
    ("{nodes: 2}", "[--tiny, --nproc, '2']", "drop --nproc from `args`"),
    ("{nodes: 2}", "[--tiny, '--nnodes=3']", "drop --nnodes=3 from `args`"),
    ("{nodes: 0}", "[--tiny]", "slurm.nodes must be a whole number >= 1, got 0"),
    ("{nodes: two}", "[--tiny]", "slurm.nodes must be a whole number >= 1"),
    ("{nodes: 2, gpus: -1}", "[--tiny]", "slurm.gpus must be a whole number >= 0"),
])
def test_bad_node_settings_in_a_spec_are_refused_when_it_is_read(tmp_path, slurm, args, message):
    text = NODES_SPEC.replace("args: [--tiny]", f"args: {args}").replace(
        "slurm: {nodes: 2, gpus: 4, partition: gpu}", f"slurm: {slurm}")
    with pytest.raises(HyperrestartError) as caught:
        _sweep_jobs(tmp_path, text)
    assert message in str(caught.value)


def test_a_p3_spec_across_nodes_is_refused(tmp_path):
    text = ("runner: p3\nconfig: configs/p3/table2_t5_restart.json\ngrid: {seed: [1]}\n"
            "slurm: {nodes: 2}\n")
    with pytest.raises(HyperrestartError, match="only `runner: run` trains one run across nodes"):
        _sweep_jobs(tmp_path, text)


def test_one_node_without_an_endpoint_runs_as_nproc(tmp_path, capsys, offline_spec):
    dest, python, out = _fake_tree(tmp_path), _fake_python(tmp_path), tmp_path / "run"
    assert cli.main(["run", str(HD_CONFIG), "--dest", str(dest), "--python", str(python), "--output-dir", str(out),
                     "--nnodes", "1", "--nproc-per-node", "2", "--quiet"]) == 0
    call = (tmp_path / "calls.txt").read_text(encoding="utf-8")
    assert "-m torch.distributed.run --standalone --nproc_per_node=2 finetune_trainer.py" in call
    assert run_folder.read_marker(out)["world_size"] == 2


@pytest.mark.slow  # a 2-process tiny run, then its second half resumed by two launchers (~4-5 min on 2 CPU cores)
def test_a_nproc_2_run_resumes_across_two_launchers_to_the_same_losses_and_weights(tmp_path):
    from test_run_robust import _losses, _simulate_kill, _weights_equal
    from test_upstream_hyperdecoders import _skip_reason
    if _skip_reason():
        pytest.skip(_skip_reason())
    (tmp_path / "tmp").mkdir()
    sets = ["--set", "save_total_limit=3", "--set", "load_best_model_at_end=false"]
    full, part = tmp_path / "full", tmp_path / "part"
    single = _launcher(full, "--nproc", "2", *sets)
    text = single.communicate(timeout=900)[0]
    assert single.returncode == 0, text[-3000:]
    _simulate_kill(full, part, keep_checkpoint=10)
    # another world size is refused on every node before anything is written
    before = sorted(p.name for p in part.iterdir())
    refused = _launcher(part, "--nnodes", "2", "--nproc-per-node", "2", "--rdzv-endpoint", "127.0.0.1:1",
                        "--node-rank", "1", "--resume", *sets, tmp=tmp_path / "tmp")
    text = refused.communicate(timeout=900)[0]
    assert refused.returncode == 1 and "trained on 2 process(es) and --nnodes 2 --nproc-per-node 2 asks for 4" in text
    assert sorted(p.name for p in part.iterdir()) == before
    # the same world size in another layout continues the same training
    results = _two_nodes(part, _free_port(), tmp_path / "tmp", "--resume", *sets)
    assert [code for code, _ in results] == [0, 0], results
    assert "from checkpoint-10" in results[0][1]
    assert len(_losses(full)) == 15 and _losses(part) == _losses(full)
    assert _weights_equal(full, part)
    assert (part / "lr_trace.csv").read_text() == (full / "lr_trace.csv").read_text()
