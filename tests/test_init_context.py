"""What `init()` returns and `JobConfig`, as Ray has them: the context is a mapping of its
address info, `get_runtime_context().get()` is a dict, and a JobConfig sets the namespace
and runtime_env of the job."""

import kastor
import pytest
from kastor.job_config import JobConfig


@kastor.remote
def env_and_context():
    import os
    return os.environ.get("FROM_JOB_CONFIG"), kastor.get_runtime_context().get()


def test_init_result_is_a_mapping_and_job_config_applies():
    config = JobConfig(ray_namespace="configured", runtime_env={"env_vars": {"FROM_JOB_CONFIG": "yes"}})
    config.set_metadata("team", "ml")
    info = kastor.init(num_cpus=2, job_config=config)
    try:
        assert info["address"] == info.address and info["gcs_address"] == info.address
        assert info["namespace"] == "configured" == kastor.get_runtime_context().namespace
        assert set(info) >= {"address", "gcs_address", "node_id", "namespace", "job_id"}
        assert dict(info)["node_id"] == info.address_info["node_id"]
        driver = kastor.get_runtime_context().get()
        assert driver == {"job_id": info.job_id, "node_id": info["node_id"], "namespace": "configured"}
        value, in_task = kastor.get(env_and_context.remote())
        assert value == "yes"
        assert in_task["job_id"] == info.job_id and in_task["namespace"] == "configured"
        assert len(in_task["task_id"]) > 0 and "actor_id" not in in_task
    finally:
        kastor.shutdown()


def test_explicit_init_arguments_win_over_the_job_config():
    info = kastor.init(num_cpus=1, namespace="explicit", job_config=JobConfig(ray_namespace="configured"))
    try:
        assert info.namespace == "explicit"
    finally:
        kastor.shutdown()


def test_job_config_refuses_what_kastor_cannot_honour():
    with pytest.raises(ValueError, match="Java"):
        JobConfig(jvm_options=["-Xmx1g"])
    with pytest.raises(ValueError, match="lifetime='detached'"):
        JobConfig(default_actor_lifetime="detached")
    with pytest.raises(ValueError, match="must be 'detached' or 'non_detached'"):
        JobConfig(default_actor_lifetime="forever")
