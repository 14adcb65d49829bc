# Source: https://docs.prefect.io/v3/how-to-guides/workflows/run-work-concurrently (PrefectHQ/prefect docs/v3/how-to-guides/workflows/run-work-concurrently.mdx, "map over datasets and model configs")
# Adapted: random.seed(0) and each run prints its name (the template reads attributes of
# dataclass parameters: "train on {dataset.name} with {model_config.name}").
# Expect exit: 0
# Expect output:
#   train on customers with random_forest
#   train on orders with gradient_boosting
#   Best model: {'dataset':

import random
from dataclasses import dataclass

from prefect import flow, task
from prefect.futures import PrefectFuture, wait
from prefect.runtime import task_run

random.seed(0)


@dataclass
class Dataset:
    name: str


@dataclass
class ModelConfig:
    name: str


@task(task_run_name="train on {dataset.name} with {model_config.name}")
def train_model(dataset: Dataset, model_config: ModelConfig) -> dict:
    print(task_run.name)
    return {
        "dataset": dataset.name,
        "model": model_config.name,
        "score": random.random(),
    }


@flow
def evaluate_models(datasets: list[Dataset], model_configs: list[ModelConfig]):
    all_futures: list[PrefectFuture[dict[str, object]]] = []
    for dataset in datasets:
        futures = train_model.map(
            dataset=dataset,
            model_config=model_configs,
        )
        all_futures.extend(futures)

    results = [future.result() for future in wait(all_futures).done]
    print(f"\nBest model: {max(results, key=lambda r: r['score'])}")


evaluate_models(
    datasets=[
        Dataset("customers"), Dataset("products"), Dataset("orders")
    ],
    model_configs=[
        ModelConfig("random_forest"), ModelConfig("gradient_boosting")
    ],
)
