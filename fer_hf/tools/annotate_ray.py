"""`fer-annotate --ray`: the same annotation on a Ray cluster with Ray Data (`pip install -r requirements-ray.txt`).

    inputs (a dataset of paths) -> map: decode + face front-end, CPU tasks (1 CPU each)
                                -> map_batches: the model, an actor pool (one model per actor, a GPU each when the
                                   cluster has GPUs), windows of several files per forward (`--batch-size`)
                                -> the driver commits the rows in parts (the same parts, ledger and tables as the
                                   local path, so runs resume across engines)

Rows are built by the same `RowBuilder` from the same `decode_file` output and `WindowBatcher` step as the local
path. Only the small result rows come back to the driver; frames and features stay in the object store between
the stages. The model and processor are shipped once through the object store (`ray.put`), so the model folder
does not have to exist on the workers; the workers need this package and its requirements installed (or a
`runtime_env`), and the media paths must be readable on every node (shared storage).
"""

from __future__ import annotations

import logging
import pickle

import numpy as np

from fer_hf.errors_fer import FERInputError

logger = logging.getLogger(__name__)

_DECODER: dict = {}


def _decode_row(row: dict, processor_box: list) -> dict:
    """Ray task body: one input row (index, path) -> the pickled `decode_file` output."""
    import ray

    from fer_hf.tools.annotate_model import decode_file, set_threads

    ref = processor_box[0]
    if _DECODER.get("ref") != ref.hex():  # one processor per worker process, reused across tasks
        set_threads(1)
        _DECODER.update(ref=ref.hex(), processor=ray.get(ref))
    decoded = decode_file(_DECODER["processor"], row["path"])
    return {"index": row["index"], "payload": pickle.dumps(decoded, protocol=pickle.HIGHEST_PROTOCOL)}


class _RayClassifier:
    """Ray actor: holds one model; classifies the windows of a batch of decoded files."""

    def __init__(self, model_box: list, processor_box: list, batch_size: int, precision: str, threads: int):
        import ray
        import torch

        from fer_hf.tools.annotate_model import WindowBatcher, set_threads

        set_threads(threads)
        model, processor = ray.get(model_box[0]), ray.get(processor_box[0])
        device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
        self.batcher = WindowBatcher(model, processor, batch_size, device, precision)

    def __call__(self, batch: dict) -> dict:
        outcomes = {}
        for index, payload in zip(batch["index"], batch["payload"]):
            decoded = pickle.loads(payload)
            if decoded["ok"]:
                self.batcher.add(int(index), decoded)
            else:
                outcomes[int(index)] = (decoded, None)
        for index, decoded, probabilities in self.batcher.drain():
            outcomes[index] = (decoded, probabilities)
        order = sorted(outcomes)
        return {"index": np.array(order, np.int64),
                "outcome": np.array([pickle.dumps(outcomes[i], protocol=pickle.HIGHEST_PROTOCOL) for i in order],
                                    dtype=object)}


def _connect(address: str) -> None:
    import ray

    if ray.is_initialized():
        return
    logger.info("starting Ray (%s)", "local or RAY_ADDRESS" if address == "local" else address)
    ray.init(address=None if address == "local" else address, logging_level=logging.WARNING)


def run_ray(pending, model, processor, committer, args) -> None:
    """Annotate `pending` [(InputFile, key)] on Ray; rows go to `committer` as files complete."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise FERInputError(
            "--ray needs Ray Data: pip install -r requirements-ray.txt (ray[data] and pyarrow)"
        ) from exc
    from fer_hf.tools.annotate_store import Progress as _Progress

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
    ds = ds.map(_decode_row, fn_kwargs={"processor_box": processor_box}, num_cpus=1)
    # Each actor asks for the memory its model needs (weights twice over plus room for a batch): the scheduler then
    # places actors where they fit, and the decode tasks stay a separate operator (Ray fuses only maps with the same
    # resource requests), so decoding scales with the cluster's CPUs, not with the number of actors.
    model_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    ds = ds.map_batches(
        _RayClassifier,
        fn_constructor_kwargs={"model_box": model_box, "processor_box": processor_box,
                               "batch_size": args.batch_size, "precision": args.precision, "threads": 1},
        batch_size=max(1, args.ray_files_per_batch), compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1,
        num_gpus=gpus or None, memory=2 * model_bytes + 512 * 2**20, batch_format="numpy",
    )
    progress = _Progress(len(pending), not args.no_progress)
    try:
        for batch in ds.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=2):
            for index, blob in zip(batch["index"], batch["outcome"]):
                decoded, probabilities = pickle.loads(blob)
                file, key = pending[int(index)]
                committer.add(file, key, decoded, probabilities)
                progress.update(committer)
    finally:
        progress.close()
        committer.flush()


__all__ = ["run_ray"]
