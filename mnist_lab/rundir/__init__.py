"""The run folder: what it holds (layout, results), who may write it (locks), what state it is
in (records), whether a command may reuse it (resume), its checkpoints and stop requests."""
