# Source: https://docs.prefect.io/v3/how-to-guides/configuration/variables (PrefectHQ/prefect docs/v3/how-to-guides/configuration/variables.mdx, "Contextual Behavior", the Synchronous tab)
# Adapted: the set, read, update and delete snippets of the same page are run after the flow and their results printed.
# Expect exit: 0
# Expect output:
#   Launching Mars Expedition with crew: Zaphod, Arthur, Trillian
#   answer: 42 then 43
#   default: 42
#   unset: True

from prefect import flow
from prefect.variables import Variable

@flow(log_prints=True)
def space_mission_sync(mission_name: str):
    crew = Variable.get("crew_members", default=["Backup1", "Backup2"])
    print(f"Launching {mission_name} with crew: {', '.join(crew)}")

if __name__ == "__main__":
    Variable.set("crew_members", ["Zaphod", "Arthur", "Trillian"])
    space_mission_sync("Mars Expedition")

    Variable.set("answer", 42)
    first = Variable.get("answer")
    Variable.set("answer", 43, overwrite=True)
    print(f"answer: {first} then {Variable.get('answer')}")
    print(f"unset: {Variable.unset('answer')}")
    print(f"default: {Variable.get('answer', default=42)}")
