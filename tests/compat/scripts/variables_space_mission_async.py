# Source: https://docs.prefect.io/v3/how-to-guides/configuration/variables (PrefectHQ/prefect docs/v3/how-to-guides/configuration/variables.mdx, "Contextual Behavior", the Asynchronous tab)
# Adapted: a second run after Variable.set without overwrite=True shows the error Prefect raises (the page's "Update a variable" section).
# Expect exit: 0
# Expect output:
#   Launching Mars Expedition with crew: Zaphod, Arthur, Trillian
#   Launching Moon Base with crew: Backup1, Backup2
#   refused: Variable 'crew_members' already exists

import asyncio
from prefect import flow
from prefect.variables import Variable

@flow(log_prints=True)
async def space_mission_async(mission_name: str):
    crew = await Variable.get("crew_members", default=["Backup1", "Backup2"])
    print(f"Launching {mission_name} with crew: {', '.join(crew)}")

if __name__ == "__main__":
    Variable.set("crew_members", ["Zaphod", "Arthur", "Trillian"])
    asyncio.run(space_mission_async("Mars Expedition"))
    try:
        Variable.set("crew_members", ["Ford"])
    except ValueError as exc:
        print(f"refused: {exc}")
    Variable.unset("crew_members")
    asyncio.run(space_mission_async("Moon Base"))
