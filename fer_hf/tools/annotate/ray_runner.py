"""`fer-annotate --ray`: the same annotation on a Ray cluster with Ray Data (`pip install -r requirements-ray.txt`).

    inputs (a dataset of paths) -> flat_map: decode + face front-end, CPU tasks (1 CPU each), one file front to
                                   back per task, yielding its chunks of windows as it goes (`file_chunks`)
                                -> map_batches: the model, an actor pool (one model per actor, a GPU each when the
                                   cluster has GPUs), rows of several chunks per forward (`--batch-size`)
                                -> the driver gathers each file's chunks (in any order) and commits the files whose
                                   rows are all in, in parts (the same parts, ledger and tables as the local path,
                                   so runs resume across engines)

Chunks, rows and the per-file summary are made by the same `file_chunks`, `WindowBatcher` and `RowBuilder` as on
the local path. A decode task hands its chunks to Ray Data as it makes them (blocks of at most the context's
`target_max_block_size`), and Ray Data's streaming executor holds back the decode tasks when the model falls
behind, so a long file is never in memory whole. Only the small result rows come back to the driver; frames
and features stay in the object store between the stages. The model and processor are shipped once through
the object store (`ray.put`), so the model folder does not have to exist on the workers; the workers need this
package and its requirements installed (or a `runtime_env`), and the media paths must be readable on every node
(shared storage).
"""

from __future__ import annotations

import logging
import pickle

import numpy as np

from fer_hf.errors_fer import FERInputError

logger = logging.getLogger(__name__)

_DECODER: dict = {}


def _decode_chunks(row: dict, processor_box: list, settings: dict):
    """Ray task body: one input row (index, path) -> its pickled `file_chunks` messages, as they are made."""
    import ray

    from fer_hf.tools.annotate.model import set_threads
    from fer_hf.tools.annotate.stream import file_chunks

    ref = processor_box[0]
    if _DECODER.get("ref") != ref.hex():  # one processor per worker process, reused across tasks
        set_threads(1)
        _DECODER.update(ref=ref.hex(), processor=ray.get(ref))
    for message in file_chunks(_DECODER["processor"], row["path"], **settings):
        yield {"index": row["index"], "payload": pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)}


class _RayClassifier:
    """Ray actor: holds one model; classifies the rows of a batch of chunks (end messages pass through)."""

    def __init__(self, model_box: list, processor_box: list, batch_size: int, precision: str, threads: int):
        import ray
        import torch

        from fer_hf.tools.annotate.model import WindowBatcher, set_threads

        set_threads(threads)
        model, processor = ray.get(model_box[0]), ray.get(processor_box[0])
        device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
        self.batcher = WindowBatcher(model, processor, batch_size, device, precision)

    def __call__(self, batch: dict) -> dict:
        outcomes = []
        for index, payload in zip(batch["index"], batch["payload"]):
            message = pickle.loads(payload)
            if message["kind"] == "chunk" and message["rows"]:
                self.batcher.add(int(index), message)
            else:
                outcomes.append((int(index), message, []))
        outcomes += list(self.batcher.drain())
        return {"index": np.array([i for i, _, _ in outcomes], np.int64),
                "outcome": np.array([pickle.dumps((m, p), protocol=pickle.HIGHEST_PROTOCOL) for _, m, p in outcomes],
                                    dtype=object)}


def _connect(address: str) -> None:
    import ray

    if ray.is_initialized():
        return
    logger.info("starting Ray (%s)", "local or RAY_ADDRESS" if address == "local" else address)
    ray.init(address=None if address == "local" else address, logging_level=logging.WARNING)


def run_ray(pending, model, processor, committer, args, settings: dict) -> None:
    """Annotate `pending` [(InputFile, key)] on Ray; rows go to `committer` as files complete."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise FERInputError(
            "--ray needs Ray Data: pip install -r requirements-ray.txt (ray[data] and pyarrow)"
        ) from exc
    from fer_hf.tools.annotate.store import Progress as _Progress

    _connect(args.ray)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = not args.no_progress
    gpus = args.ray_gpus_per_actor
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    actors = max(1, args.ray_actors)
    logger.info("Ray: %s CPUs, %s GPUs; %d model actor(s) with %.2g GPU each", ray.cluster_resources().get("CPU"),
                ray.cluster_resources().get("GPU", 0), actors, gpus)
    model_box, processor_box = [ray.put(model.cpu())], [ray.put(processor)]
    items = [{"index": i, "path": f.path} for i, (f, _) in enumerate(pending)]
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 64 * actors)))
    ds = ds.flat_map(_decode_chunks, fn_kwargs={"processor_box": processor_box, "settings": dict(settings)},
                     num_cpus=1)
    # Each actor asks for the memory its model needs (weights twice over plus room for a batch): the scheduler then
    # places actors where they fit, and the decode tasks stay a separate operator (Ray fuses only maps with the same
    # resource requests), so decoding scales with the cluster's CPUs, not with the number of actors.
    model_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    ds = ds.map_batches(
        _RayClassifier,
        fn_constructor_kwargs={"model_box": model_box, "processor_box": processor_box,
                               "batch_size": args.batch_size, "precision": args.precision, "threads": 1},
        batch_size=max(1, args.ray_chunks_per_batch), compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1,
        num_gpus=gpus or None, memory=2 * model_bytes + 512 * 2**20, batch_format="numpy",
    )
    committer.progress = _Progress(len(pending), not args.no_progress)
    try:
        for batch in ds.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=2):
            for index, blob in zip(batch["index"], batch["outcome"]):
                message, probabilities = pickle.loads(blob)
                job = pending[int(index)]
                if message["kind"] == "chunk":
                    committer.chunk(job, message, probabilities)
                else:
                    committer.end(job, message)
    finally:
        committer.progress.close()
        committer.flush()


__all__ = ["run_ray"]
