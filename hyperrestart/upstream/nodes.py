"""Where this launcher sits in a run across nodes: the layout (--nnodes, --nproc-per-node, --rdzv-endpoint,
--node-rank, filled from SLURM's environment or submitit's JobEnvironment when missing), the rendezvous id, and the
torchrun arguments (c10d rendezvous). Node rank 0's launcher owns the run folder; the others write nothing there."""
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess

from hyperrestart.core.errors import HyperrestartError

RDZV_TIMEOUT = 300  # seconds every node's launcher waits for the others to join (torchrun's join_timeout)
PORT_BASE, PORT_SPAN = 20000, 10000  # a port derived from a SLURM job id: below Linux's ephemeral range (32768-)


@dataclasses.dataclass(frozen=True)
class Layout:
    """A run over `nnodes` launchers of `nproc_per_node` processes each, meeting at `endpoint` (host, port)."""

    nnodes: int
    nproc_per_node: int
    endpoint: tuple  # (host, port), or None for a single node
    node_rank: int
    source: str  # where the endpoint and node rank came from: "options", "SLURM", "submitit"
    timeout: int = RDZV_TIMEOUT

    @property
    def world_size(self):
        return self.nnodes * self.nproc_per_node

    @property
    def owner(self):
        """True for the launcher that owns the run folder (lock, marker, config, lr trace, summary)."""
        return self.node_rank == 0

    @property
    def endpoint_text(self):
        host, port = self.endpoint
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_endpoint(text):
    """'HOST:PORT' (or '[IPv6]:PORT') -> (host, port); refuses a missing host or port, or a port outside 1-65535."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([A-Za-z0-9._-]+):(\d+)", str(text).strip())
    if not match:
        raise HyperrestartError(f"--rdzv-endpoint {text!r}: give HOST:PORT, e.g. node01:29400 (the first node's "
                                f"name and a free port every node can reach)")
    host, port = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
    if not 1 <= int(port) <= 65535:
        raise HyperrestartError(f"--rdzv-endpoint {text!r}: port {port} is outside 1-65535; choose a free port, "
                                f"e.g. 29400")
    return host, int(port)


def expand_nodelist(text):
    """SLURM's compact node list ('node[01-03,07],gpu5,r[1-2]n[3-4]') -> host names in order, zero padding kept."""
    hosts = []
    for group in re.findall(r"(?:[^,\[]|\[[^\]]*\])+", str(text)):
        names = [""]
        for literal, ranges in re.findall(r"([^\[]*)(?:\[([^\]]*)\])?", group):
            names = [name + literal for name in names]
            if ranges:
                names = [name + item for name in names for item in _expand_ranges(ranges, text)]
        hosts.extend(names)
    if not hosts:
        raise HyperrestartError(f"SLURM_JOB_NODELIST {text!r} names no node")
    return hosts


def _expand_ranges(ranges, text):
    items = []
    for part in ranges.split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part.strip())
        if not match or (match.group(2) and int(match.group(2)) < int(match.group(1))):
            raise HyperrestartError(f"SLURM_JOB_NODELIST {text!r}: cannot read the range {part!r}")
        first, last = match.group(1), match.group(2) or match.group(1)
        items += [str(n).zfill(len(first)) for n in range(int(first), int(last) + 1)]
    return items


def slurm_hostnames(nodelist, scontrol=None):
    """The job's hosts: `scontrol show hostnames` when it is on PATH (SLURM's own reading), else expand_nodelist."""
    scontrol = scontrol if scontrol is not None else shutil.which("scontrol")
    if scontrol:
        try:
            out = subprocess.run([scontrol, "show", "hostnames", nodelist], capture_output=True, text=True,
                                 timeout=30, check=True).stdout.split()
            if out:
                return out
        except (OSError, subprocess.SubprocessError):
            pass
    return expand_nodelist(nodelist)


def derived_port(job_id):
    """A port every node of one SLURM job computes alike from its job id ('123', '123_4' for an array task)."""
    return PORT_BASE + int(hashlib.sha256(str(job_id).encode("utf-8")).hexdigest(), 16) % PORT_SPAN


def cluster_nodes(env=None, job_environment=None):
    """(host names, this node's index, job id) from submitit's JobEnvironment (given), else SLURM's environment
    (SLURM_JOB_NODELIST, SLURM_NODEID, SLURM_JOB_ID); None outside a SLURM job."""
    if job_environment is not None:
        hosts = list(job_environment.hostnames)
        if int(job_environment.num_nodes) != len(hosts):
            raise HyperrestartError(f"submitit reports {job_environment.num_nodes} nodes but {len(hosts)} host "
                                    f"names ({', '.join(hosts)})")
        return hosts, int(job_environment.node), str(job_environment.job_id)
    env = os.environ if env is None else env
    if not env.get("SLURM_JOB_ID") or not env.get("SLURM_JOB_NODELIST"):
        return None
    hosts = slurm_hostnames(env["SLURM_JOB_NODELIST"])
    count = env.get("SLURM_NNODES") or env.get("SLURM_JOB_NUM_NODES")
    if count and int(count) != len(hosts):
        raise HyperrestartError(f"SLURM_NNODES={count} but SLURM_JOB_NODELIST={env['SLURM_JOB_NODELIST']} names "
                                f"{len(hosts)} node(s)")
    job_id = env["SLURM_JOB_ID"]
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        job_id = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return hosts, int(env.get("SLURM_NODEID", "0")), job_id


def layout(request, env=None, job_environment=None):
    """The request's node layout (None: the single-node form, --nproc). Refuses, before anything is touched: a
    count below 1, --nnodes with --nproc, a bad endpoint, no endpoint or node rank for --nnodes > 1 outside SLURM,
    a node rank outside 0..N-1, a multi-node --repeat, a run folder left to the default."""
    nnodes, per_node = getattr(request, "nnodes", None), getattr(request, "nproc_per_node", None)
    endpoint, node_rank = getattr(request, "rdzv_endpoint", None), getattr(request, "node_rank", None)
    if nnodes is None:
        if per_node is not None or endpoint or node_rank is not None:
            given = "--nproc-per-node" if per_node is not None else "--rdzv-endpoint" if endpoint else "--node-rank"
            raise HyperrestartError(f"{given} belongs to a run across nodes: add --nnodes N (on one machine, use "
                                    f"--nproc K)")
        return None
    if request.nproc is not None:
        raise HyperrestartError("--nnodes goes with --nproc-per-node K, not --nproc (the single-node form): give "
                                "--nnodes N --nproc-per-node K")
    if nnodes < 1:
        raise HyperrestartError(f"--nnodes {nnodes}: give a node count >= 1")
    per_node = 1 if per_node is None else per_node
    if per_node < 1:
        raise HyperrestartError(f"--nproc-per-node {per_node}: give a process count >= 1")
    if getattr(request, "repeat", None):
        raise HyperrestartError("--repeat reruns a run on one node with its recorded --nproc; drop --nnodes")
    if not request.output_dir:
        raise HyperrestartError("--nnodes: give --output-dir, the same run folder on every node (a folder every "
                                "node can read, e.g. on the cluster's shared filesystem)")
    timeout = getattr(request, "rdzv_timeout", None)
    timeout = RDZV_TIMEOUT if timeout is None else timeout
    if timeout < 1:
        raise HyperrestartError(f"--rdzv-timeout {timeout}: give the seconds to wait for the other nodes (>= 1)")
    source = "options"
    parsed = parse_endpoint(endpoint) if endpoint else None
    if (parsed is None or node_rank is None) and nnodes > 1:
        cluster = cluster_nodes(env, job_environment)
        if cluster is None:
            missing = " and ".join(x for x, ok in (("--rdzv-endpoint HOST:PORT", parsed), ("--node-rank R", node_rank
                                                                                         is not None)) if not ok)
            raise HyperrestartError(f"--nnodes {nnodes}: give {missing} (the same endpoint on every node; node rank "
                                    f"0 on the node that owns the run folder, 1..{nnodes - 1} on the others), or run "
                                    f"inside a SLURM job, which names them")
        hosts, index, job_id = cluster
        if len(hosts) != nnodes:
            raise HyperrestartError(f"--nnodes {nnodes}, but this SLURM job has {len(hosts)} node(s) "
                                    f"({', '.join(hosts[:8])}); give --nnodes {len(hosts)}")
        source = "submitit" if job_environment is not None else "SLURM"
        parsed = parsed or (hosts[0], derived_port(job_id))
        node_rank = index if node_rank is None else node_rank
    node_rank = 0 if node_rank is None else node_rank
    if not 0 <= node_rank < nnodes:
        raise HyperrestartError(f"--node-rank {node_rank}: give 0..{nnodes - 1} (0 on the node that owns the run "
                                f"folder)")
    return Layout(nnodes, per_node, parsed, node_rank, source, timeout)


def rendezvous_id(output_dir, trainer_config, nnodes, nproc_per_node):
    """The c10d run id: a hash of the resolved run folder, the config the trainer runs and the node layout, so
    launchers started with another folder, config or layout never join each other's run (they time out instead)."""
    text = json.dumps([str(output_dir), trainer_config, nnodes, nproc_per_node], sort_keys=True, default=str)
    return "hyperrestart-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def torchrun_args(layout_, run_id):
    """torch.distributed.run's options for one node of the run (c10d rendezvous at the endpoint; no restarts: a
    failed worker fails the run, which `--resume` continues)."""
    return [f"--nnodes={layout_.nnodes}", f"--nproc_per_node={layout_.nproc_per_node}", "--rdzv_backend=c10d",
            f"--rdzv_endpoint={layout_.endpoint_text}", f"--rdzv_id={run_id}",
            f"--rdzv_conf=join_timeout={layout_.timeout}", "--max_restarts=0"]


def trainer_env(layout_):
    """What the trainer's processes learn of the node layout: hyperdecoders' hyperrestart_nodes.py (an overlay file)
    checks that every node rank 0..N-1 was started once, so two launchers started as one node rank fail clearly."""
    return {"HYPERRESTART_NODE_RANK": str(layout_.node_rank), "HYPERRESTART_NNODES": str(layout_.nnodes)}


def node_args(layout_):
    """The `hyperrestart run` options that start this node's part of the run (what a SLURM job's node runs)."""
    return ["--nnodes", str(layout_.nnodes), "--nproc-per-node", str(layout_.nproc_per_node),
            "--rdzv-endpoint", layout_.endpoint_text, "--node-rank", str(layout_.node_rank)]
