"""Scale-out: the same per-batch code on this machine or on a Ray cluster.

    inputs.py      paths, folders, stdin, manifests, tar / WebDataset shards, `hf:` datasets
                   -> one ordered list of input rows, cut into shards with stable ids
    batch.py       ScoreBatch / EmbedBatch: the one picklable per-batch callable
                   (dict of arrays in, dict of arrays out) both engines run
    engines.py     local engine (in this process, decode of the next batch overlapped)
    ray_engine.py  Ray Data `map_batches` over an actor pool (Ray imported only here, lazily)
    outputs.py     Parquet part files + job.json (+ the feature cache's manifest), JSONL records
    jobs.py        run a scan / feature job on either engine, resumable shard by shard
    commands.py    the `fakescope features` command

Nothing here imports Ray or pyarrow at module level: `import fakescope` stays light.
"""
