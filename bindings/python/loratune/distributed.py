"""Data-parallel training from Python: the lt_comm groups of include/loratune.h.

A script launched by torchrun or srun (one process per GPU) joins the run and trains as usual:

    import loratune as lt
    from loratune import distributed as dist

    group = dist.init_from_env()               # WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT
    model = lt.Model(path, device="cuda:%d" % group.local_rank)
    ...
    trainer = dist.Trainer(group, model, dataset, grad_accum=4, ...)   # rank 0 writes output_dir
    trainer.run()
    if group.rank == 0:
        model.save_adapter("lora_model")
    trainer.close(); group.close()

grad_accum is per process: a step sees world_size x grad_accum micro-batches, the records and
losses of one process with grad_accum x world_size. On CUDA the gradients go through NCCL
(rank 0's NCCL id travels over the group); on the CPU backend through the group itself.

Threads of one process (the CPU backend's in-process group, e.g. for tests): make one
ProcessGroup.local(world_size) and give each thread's Trainer its own rank=.

A rank that dies, hangs or aborts makes the others raise NcclError (LT_ERR_NCCL) naming it within
the timeout (dist_timeout_s, 30 s by default).
"""
import ctypes
import os

from . import _ffi
from . import core as _core
from ._ffi import LoratuneError, check, encode_str, init_struct

__all__ = ["ProcessGroup", "Trainer", "env", "init_from_env", "nccl_unique_id", "share_nccl_id"]

_L = _ffi.lib()


def _env_int(names, default):
    for n in names:
        v = os.environ.get(n)
        if v not in (None, ""):
            try:
                return int(v)
            except ValueError:
                raise LoratuneError(_ffi.LT_ERR_INVALID_ARGUMENT, "%s=%r is not an integer" % (n, v), "env")
    return default


def env():
    """This process's place in a launched run: world_size, rank, local_rank, master_addr,
    master_port, from torchrun's variables or Slurm's (SLURM_NTASKS, SLURM_PROCID, SLURM_LOCALID).
    world_size is 1 when none is set."""
    world = _env_int(["WORLD_SIZE", "SLURM_NTASKS"], 1)
    rank = _env_int(["RANK", "SLURM_PROCID"], 0)
    local = _env_int(["LOCAL_RANK", "SLURM_LOCALID"], 0)
    port = _env_int(["MASTER_PORT"], 29500)
    addr = os.environ.get("MASTER_ADDR") or None
    if world > 1 and addr is None:
        if _env_int(["SLURM_NNODES"], 1) > 1:
            raise LoratuneError(_ffi.LT_ERR_INVALID_ARGUMENT, "WORLD_SIZE %d over several nodes: set MASTER_ADDR to "
                                "rank 0's host" % world, "env")
        addr = "127.0.0.1"
    return {"world_size": world, "rank": rank, "local_rank": local, "master_addr": addr, "master_port": port}


class ProcessGroup(_core._Handle):
    """A data-parallel group (lt_comm). ProcessGroup(world_size, rank, master_addr, master_port):
    this process is `rank` of a group meeting over TCP at master_addr:master_port (rank 0
    listens); it returns once every rank has joined. ProcessGroup.local(world_size): ranks that are
    threads of this process (CPU backend), each passing its rank to the calls."""
    _free = "lt_comm_free"
    _what = "process group"

    def __init__(self, world_size=None, rank=None, master_addr=None, master_port=None, timeout_s=None,
                 local_rank=0, _local=False):
        super().__init__()
        p = init_struct(_ffi.lt_comm_params, _L.lt_comm_params_init)
        if world_size is not None:
            p.world_size = int(world_size)
        if rank is not None:
            p.rank = int(rank)
        if master_port is not None:
            p.master_port = int(master_port)
        if timeout_s is not None:
            p.timeout_s = float(timeout_s)
        if not _local:
            if master_addr is None:
                raise LoratuneError(_ffi.LT_ERR_INVALID_ARGUMENT, "master_addr is required (ProcessGroup.local() "
                                    "makes an in-process group)", "ProcessGroup")
            b = encode_str(master_addr)
            self._keep.append(b)
            p.master_addr = b
        check(_L.lt_comm_new(ctypes.byref(p), ctypes.byref(self._h)), "lt_comm_new")
        w, r = ctypes.c_int32(), ctypes.c_int32()
        check(_L.lt_comm_get_info(self._h, ctypes.byref(w), ctypes.byref(r)), "lt_comm_get_info")
        self.world_size = w.value
        self.rank = r.value  # -1 for an in-process group
        self.local_rank = int(local_rank)
        self.is_local = bool(_local)

    @classmethod
    def local(cls, world_size, timeout_s=None):
        return cls(world_size=world_size, timeout_s=timeout_s, _local=True)

    def _rank(self, rank):
        if rank is None:
            if self.is_local:
                raise LoratuneError(_ffi.LT_ERR_INVALID_ARGUMENT, "an in-process group needs the caller's rank",
                                    "ProcessGroup")
            return self.rank
        return int(rank)

    def broadcast(self, data, rank=None):
        """Rank 0's bytes on every rank (every rank passes a buffer of the same length)."""
        buf = ctypes.create_string_buffer(bytes(data), len(data))
        check(_L.lt_comm_broadcast(self.handle, self._rank(rank), buf, len(data)), "lt_comm_broadcast")
        return buf.raw

    def barrier(self, rank=None):
        check(_L.lt_comm_barrier(self.handle, self._rank(rank)), "lt_comm_barrier")

    def abort(self, reason, rank=None):
        """Every rank's current and later collectives fail with "rank R aborted: reason"."""
        _L.lt_comm_abort(self.handle, self._rank(rank), encode_str(reason))


def init_from_env(timeout_s=None):
    """The group of a torchrun / srun launched process (see env()); a one-rank in-process group
    when the environment names no run."""
    e = env()
    if e["world_size"] <= 1:
        g = ProcessGroup.local(1, timeout_s=timeout_s)
        g.rank = 0
        g.is_local = False
        return g
    return ProcessGroup(e["world_size"], e["rank"], e["master_addr"], e["master_port"], timeout_s=timeout_s,
                        local_rank=e["local_rank"])


def nccl_unique_id():
    """A fresh NCCL id (LT_NCCL_ID_BYTES = 128 bytes; CUDA builds with NCCL only)."""
    buf = (ctypes.c_uint8 * 128)()  # LT_NCCL_ID_BYTES
    check(_L.lt_nccl_get_unique_id(buf), "lt_nccl_get_unique_id")
    return bytes(buf)


def share_nccl_id(group, rank=None):
    """Rank 0 makes an NCCL id and every rank of the group receives it (for a trainer given
    nccl_id instead of the group)."""
    r = group._rank(rank)
    nid = nccl_unique_id() if r == 0 else bytes(128)
    return group.broadcast(nid, rank=r)


class Trainer(_core.Trainer):
    """loratune.Trainer as one rank of a data-parallel group: Trainer(group, model, dataset,
    **the Trainer keywords, rank=None, nccl_id=None, dist_timeout_s=None). rank: required for an
    in-process group (the thread's rank). nccl_id: CUDA, an id shared some other way (else rank
    0's id travels over the group)."""

    def __init__(self, group, model, dataset, rank=None, nccl_id=None, dist_timeout_s=None, **kwargs):
        if not isinstance(group, ProcessGroup):
            raise LoratuneError(_ffi.LT_ERR_INVALID_ARGUMENT, "group: expected a distributed.ProcessGroup",
                                "Trainer")
        self._dist = (group, group._rank(rank), nccl_id, dist_timeout_s)
        super().__init__(model, dataset, **kwargs)
        group._adopt(self)  # the group outlives the trainer

    def _new_trainer(self, p):  # called by core.Trainer before lt_trainer_new
        group, rank, nccl_id, timeout = self._dist
        p.comm = group.handle
        p.world_size = group.world_size
        p.rank = rank
        if timeout is not None:
            p.dist_timeout_s = float(timeout)
        if nccl_id is not None:
            nid = bytes(nccl_id)
            if len(nid) != 128:
                raise LoratuneError(_ffi.LT_ERR_INVALID_ARGUMENT, "nccl_id must be 128 bytes", "Trainer")
            arr = (ctypes.c_uint8 * 128).from_buffer_copy(nid)
            self._keep.append(arr)
            p.nccl_id = ctypes.cast(arr, ctypes.POINTER(ctypes.c_uint8))
