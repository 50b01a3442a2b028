"""SLURM through Hydra's submitit launcher (``hydra/launcher=slurm_cpu``, ``slurm_gpu``).

One change to the plugin's SlurmLauncher: a job that ends without a result (``scancel``,
SLURM's own kill at its time limit, a lost node) is a failed job of the sweep. The plugin raises
instead, which ends the sweep command with a traceback while its other jobs still run, and
leaves no summary. Here the sweep waits for every job, its summary shows each job's folder as
it is (an interrupted job keeps its checkpoint, and the command that resumes it), and the
command exits 1, as for any failed job.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
    SlurmLauncher as PluginSlurmLauncher,
)
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


class SlurmLauncher(PluginSlurmLauncher):
    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        # The plugin's launch (hydra-submitit-launcher 1.2), but for the results at its end.
        import submitit

        assert self.config is not None and len(job_overrides) > 0
        init_keys = {"max_num_timeout", "submitit_folder"}
        executor = submitit.AutoExecutor(
            cluster="slurm",
            folder=self.params["submitit_folder"],
            slurm_max_num_timeout=self.params["max_num_timeout"],
        )
        queue_keys = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                key if key in queue_keys else f"slurm_{key}": value
                for key, value in self.params.items()
                if key not in init_keys
            }
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        log.info(f"Submitit 'slurm' sweep output dir : {sweep_dir}")
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        job_params: list[Any] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            state = Singleton.get_state()
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", state))
        jobs = executor.map_array(self, *zip(*job_params, strict=True))
        return [_result(job, o) for job, o in zip(jobs, job_overrides, strict=True)]


def _result(job: Any, overrides: Sequence[str]) -> JobReturn:
    """The job's own JobReturn; for a job that left none, what mnist-lab's own jobs return when
    they fail (no value: Hydra's sweeper would raise on a FAILED one and end the sweep). Its
    folder says the rest: the summary, a search and ``mnist-lab-runs`` read it."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    try:
        result: JobReturn = job.results()[0]
        return result
    except (UncompletedJobError, FailedJobError):
        log.error(
            "SLURM job %s ended without a result (%s); its output: %s",
            job.job_id,
            job.state,
            job.paths.stdout,
        )
        return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
