"""datasets.py - `from datasets import load_dataset` for loratune notebooks: the real Hugging Face
`datasets` when it is installed; otherwise a minimal Dataset (column access, iteration of dicts,
len, map(batched=True), select, shuffle, train_test_split) and load_dataset("json", data_files=..., split=...)
over local JSON / JSONL files.
"""
import json
import math
import os
import random

try:  # the real library when it is there: nothing of this module is needed then
    from datasets import Dataset, DatasetDict, load_dataset  # noqa: F401
    HAVE_HF_DATASETS = True
except ImportError:
    HAVE_HF_DATASETS = False

    def _read_json_records(path):
        """A JSON array (or an object holding one list) or JSONL file -> list of dicts."""
        with open(path, encoding="utf-8") as f:
            text = f.read()
        s = text.lstrip()
        if s.startswith("["):
            return json.loads(s)
        if s.startswith("{"):
            try:
                obj = json.loads(s)
                lists = [v for v in obj.values() if isinstance(v, list)]
                if len(lists) == 1:
                    return lists[0]
            except json.JSONDecodeError:
                pass  # JSONL: one object per line
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    class Dataset:
        """Rows of dicts with the same keys; ds["col"] is a column (a list), ds[i] a row."""

        def __init__(self, rows):
            self._rows = [dict(r) for r in rows]
            cols = []
            for r in self._rows:
                for k in r:
                    if k not in cols:
                        cols.append(k)
            self._cols = cols

        @classmethod
        def from_list(cls, rows):
            return cls(rows)

        @classmethod
        def from_dict(cls, columns):
            cols = list(columns)
            n = len(columns[cols[0]]) if cols else 0
            return cls([{c: columns[c][i] for c in cols} for i in range(n)])

        @classmethod
        def from_json(cls, path):
            return cls(_read_json_records(path))

        @property
        def column_names(self):
            return list(self._cols)

        @property
        def num_rows(self):
            return len(self._rows)

        def __len__(self):
            return len(self._rows)

        def __iter__(self):
            return (dict(r) for r in self._rows)

        def __getitem__(self, key):
            if isinstance(key, str):
                if key not in self._cols:
                    raise KeyError("no column %r (columns: %s)" % (key, ", ".join(self._cols)))
                return [r.get(key) for r in self._rows]
            if isinstance(key, slice):
                rows = self._rows[key]
                return {c: [r.get(c) for r in rows] for c in self._cols}
            return dict(self._rows[key])

        def map(self, function, batched=False, batch_size=1000, remove_columns=None, **kwargs):
            """function(row) -> dict of new/updated columns; batched: function(dict of lists)
            -> dict of lists (batch_size rows at a time; None = all)."""
            out = []
            if batched:
                step = batch_size if batch_size and batch_size > 0 else max(len(self._rows), 1)
                for start in range(0, len(self._rows), step):
                    rows = self._rows[start:start + step]
                    batch = {c: [r.get(c) for r in rows] for c in self._cols}
                    upd = function(batch) or {}
                    lengths = {len(v) for v in upd.values()}
                    if lengths and lengths != {len(rows)}:
                        raise ValueError("map(batched=True): the function returned columns of lengths %s for "
                                         "a batch of %d rows" % (sorted(lengths), len(rows)))
                    for i, r in enumerate(rows):
                        nr = dict(r)
                        nr.update({k: v[i] for k, v in upd.items()})
                        out.append(nr)
            else:
                for r in self._rows:
                    nr = dict(r)
                    nr.update(function(dict(r)) or {})
                    out.append(nr)
            if remove_columns:
                drop = {remove_columns} if isinstance(remove_columns, str) else set(remove_columns)
                out = [{k: v for k, v in r.items() if k not in drop} for r in out]
            return Dataset(out)

        def select(self, indices):
            return Dataset([self._rows[i] for i in indices])

        def shuffle(self, seed=None):
            rows = list(self._rows)
            random.Random(seed).shuffle(rows)
            return Dataset(rows)

        def train_test_split(self, test_size=None, train_size=None, shuffle=True, seed=None):
            """{"train", "test"} as datasets does it: test_size / train_size a fraction or a count
            (test_size 0.25 when neither is given); shuffled with seed unless shuffle=False."""
            n = len(self._rows)

            def count(x):
                return None if x is None else int(math.ceil(x * n)) if isinstance(x, float) else int(x)
            n_test, n_train = count(test_size), count(train_size)
            if isinstance(train_size, float):
                n_train = int(math.floor(train_size * n))
            if n_test is None:
                n_test = n - n_train if n_train is not None else int(math.ceil(0.25 * n))
            if n_train is None:
                n_train = n - n_test
            if n_test <= 0 or n_train <= 0 or n_test + n_train > n:
                raise ValueError("train_test_split: test_size=%r, train_size=%r do not split %d rows into two "
                                 "non-empty parts" % (test_size, train_size, n))
            order = list(range(n))
            if shuffle:
                random.Random(seed).shuffle(order)
            return DatasetDict(train=Dataset([self._rows[i] for i in order[n_test:n_test + n_train]]),
                               test=Dataset([self._rows[i] for i in order[:n_test]]))

        def to_list(self):
            return [dict(r) for r in self._rows]

        def __repr__(self):
            return "Dataset({features: %s, num_rows: %d})" % (self._cols, len(self._rows))

    class DatasetDict(dict):
        @property
        def column_names(self):
            return {k: v.column_names for k, v in self.items()}

        def map(self, function, **kwargs):
            return DatasetDict({k: v.map(function, **kwargs) for k, v in self.items()})

    def load_dataset(path, data_files=None, split=None, **kwargs):
        """load_dataset("json", data_files="file.json" | [...] | {"train": ...}, split="train"),
        or a local .json/.jsonl path. Hub datasets need the real `datasets` package."""
        if path in ("json", "jsonl"):
            if data_files is None:
                raise ValueError('load_dataset("json") needs data_files=')
            files = data_files if isinstance(data_files, dict) else {"train": data_files}
        elif os.path.isfile(path):
            files = {"train": path}
        elif os.path.isdir(path):
            found = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith((".json", ".jsonl")))
            if not found:
                raise FileNotFoundError("no .json / .jsonl file in %s" % path)
            files = {"train": found}
        else:
            raise ImportError("load_dataset(%r): only local JSON files work without the `datasets` package; "
                              "pip install datasets to load from the Hugging Face Hub" % path)
        splits = DatasetDict()
        for name, f in files.items():
            rows = []
            for one in ([f] if isinstance(f, (str, os.PathLike)) else f):
                rows += _read_json_records(one)
            splits[name] = Dataset(rows)
        if split is None:
            return splits
        if split not in splits:
            raise ValueError("unknown split %r (have: %s)" % (split, ", ".join(splits)))
        return splits[split]
