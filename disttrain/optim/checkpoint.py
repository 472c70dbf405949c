"""A state_dict as flat named arrays plus JSON, so np.savez/np.load(allow_pickle=False) carry it."""

from __future__ import annotations

import json

import numpy as np

__all__ = ["state_dict_to_arrays", "state_dict_from_arrays"]

FORMAT = "disttrain.optim.state_dict/1"


def state_dict_to_arrays(state_dict: dict) -> tuple[dict[str, np.ndarray], str]:
    """Split a state_dict into {name: array} and a JSON string describing the rest."""
    arrays: dict[str, np.ndarray] = {}
    state = {str(index): _encode(values, f"state/{index}", arrays)
             for index, values in state_dict["state"].items()}
    groups = [_encode(group, f"param_groups/{i}", arrays)
              for i, group in enumerate(state_dict["param_groups"])]
    meta = {"format": FORMAT, "state": state, "param_groups": groups,
            "int_keys": [isinstance(k, int) for k in state_dict["state"]]}
    return arrays, json.dumps(meta)


def state_dict_from_arrays(arrays, meta: str) -> dict:
    """Rebuild the state_dict from state_dict_to_arrays' output (arrays may be an NpzFile)."""
    meta = json.loads(meta)
    if meta.get("format") != FORMAT:
        raise ValueError(f"not an optimizer state dict in {FORMAT} format: {meta.get('format')!r}")
    keys = [int(k) if is_int else k for k, is_int in zip(meta["state"], meta["int_keys"])]
    state = {key: _decode(value, arrays) for key, value in zip(keys, meta["state"].values())}
    groups = [_decode(group, arrays) for group in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def _encode(value, name: str, arrays: dict):
    """JSON-able form of value; arrays (and numpy scalars) go to arrays under name."""
    if isinstance(value, (np.ndarray, np.generic)):
        arrays[name] = np.array(value, copy=True)
        return {"__array__": name, "scalar": isinstance(value, np.generic)}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"{name}: only string keys can be saved, got {list(value)}")
        return {k: _encode(v, f"{name}/{k}", arrays) for k, v in value.items()}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, f"{name}/{i}", arrays) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{name}/{i}", arrays) for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{name}: cannot save a {type(value).__name__} without pickle")


def _decode(value, arrays):
    if isinstance(value, dict):
        if "__array__" in value:
            array = np.array(arrays[value["__array__"]], copy=True)
            return array[()] if value["scalar"] else array
        if "__tuple__" in value:
            return tuple(_decode(v, arrays) for v in value["__tuple__"])
        return {k: _decode(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    return value
