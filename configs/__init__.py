"""Experiment configs: `get_config()` of each file returns an `ml_collections.ConfigDict`.

Pass one to train.py with `--config=configs/<name>.py` and override any field with
`--config.<field>=<value>`; each file's docstring gives its command and expected result.
"""
