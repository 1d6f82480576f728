"""The client side of the Hub round-trip tests, run in a subprocess with the local Hub's environment.

huggingface_hub reads HF_ENDPOINT / HF_HUB_OFFLINE / HF_HUB_CACHE when it is imported, and the test process runs
with HF_HUB_OFFLINE=1, so everything that talks to the Hub runs here. It reads a JSON list of steps from argv[1]:

    {"op": "push", "source": S, "repo": R, "tag": T, "key": K}   seg_zoo.push_to_hub; result[K] = commit sha
    {"op": "outputs", "source": S, "out": PATH, "hub": true}     segment the fixed batch with seg_zoo.load(S)
                                                                  (hub: zoo names resolve to their Hub repo)
    {"op": "pull", "source": S, "out": DIR}                      seg_zoo.pull
    {"op": "fail", "source": S, "key": K}                        loading must fail; result[K] = the error

and prints the JSON object of results on its last line. The test process calls :func:`segment` itself for the
outputs before the round trip.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

import seg_zoo
from seg_core import BackgroundClass, ConceptSet

WORLD_NAMES = ("sky", "grass", "water", "sand", "wall", "road", "snow", "tomato", "banana", "flower", "duck", "boat")


def fixed_batch() -> torch.Tensor:
    """Two 64 x 64 images every run sees identically."""
    generator = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 64, 64, generator=generator)


def segment(source: str, *, prefer_bundled: bool = True) -> dict[str, Any]:
    """Logits and labels of the model on :func:`fixed_batch`: closed-set models segment their own classes, ZUTIS
    its things with a background, the others world classes."""
    resolved = seg_zoo.resolve(source, prefer_bundled=prefer_bundled)
    description = resolved.description()
    names = tuple(description.get("label_names") or description.get("config", {}).get("class_names") or ())
    if resolved.native is not None and resolved.native.kind == "reco":
        names = WORLD_NAMES
    if names and names[0] == "background":
        concepts = ConceptSet(names=names[1:], background=BackgroundClass())
    else:
        concepts = ConceptSet(names=names or WORLD_NAMES)
    segmenter = seg_zoo.build_resolved(resolved)
    with torch.no_grad():
        result = segmenter.segment(fixed_batch(), concepts)
    return {"logits": result.logits, "labels": result.labels, "kind": resolved.kind, "method": resolved.method}


def main(steps_file: str) -> None:
    results: dict[str, Any] = {}
    for step in json.loads(Path(steps_file).read_text()):
        op = step["op"]
        if op == "push":
            results[step["key"]] = seg_zoo.push_to_hub(step["source"], step["repo"], tag=step.get("tag"))
        elif op == "outputs":
            torch.save(segment(step["source"], prefer_bundled=not step.get("hub", False)), step["out"])
        elif op == "pull":
            results[step["key"]] = str(seg_zoo.pull(step["source"], step["out"]))
        elif op == "fail":
            try:
                seg_zoo.load(step["source"])
            except Exception as error:  # the test asserts on the type and message
                results[step["key"]] = f"{type(error).__name__}: {error}"
            else:
                results[step["key"]] = "loaded"
        else:
            raise SystemExit(f"unknown op {op!r}")
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1])
