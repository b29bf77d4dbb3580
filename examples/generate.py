"""Writes the example data sets the docs use (run from the repository root: python examples/generate.py).

Both are synthetic, drawn with a fixed seed, so this script rewrites the same bytes:

* houses.csv (200 rows): area (m²), rooms, age (years) → price (thousands), a regression;
  new_houses.csv: five houses to score, with an `id` column that prediction copies through.
* penguins.csv (150 rows): bill_length, bill_depth (mm), flipper_length (mm), body_mass (g) →
  species (adelie, chinstrap, gentoo), a three-class classification; new_penguins.csv: four
  penguins to score, with an `id` column.
"""

import csv
import pathlib

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
# Per species: the mean and standard deviation of each measurement.
SPECIES = {
    "adelie": ((38.8, 2.7), (18.3, 1.2), (190.0, 6.5), (3700.0, 460.0)),
    "chinstrap": ((48.8, 3.3), (18.4, 1.1), (196.0, 7.1), (3730.0, 380.0)),
    "gentoo": ((47.5, 3.1), (15.0, 1.0), (217.0, 6.5), (5080.0, 500.0)),
}


def houses(rng: np.random.Generator, n: int) -> list[list]:
    """Rows of area, rooms, age and price: price grows with area and rooms, falls with age."""
    area = rng.uniform(35.0, 220.0, n)
    rooms = np.clip(np.round(area / 32.0 + rng.normal(0.0, 0.7, n)), 1, 8)
    age = rng.integers(0, 90, n)
    price = 0.95 * area * (1.0 - 0.004 * age) + 14.0 * rooms + 40.0 + rng.normal(0.0, 12.0, n)
    return [[round(a, 1), int(r), int(g), round(p, 1)] for a, r, g, p in zip(area, rooms, age, price)]


def penguins(rng: np.random.Generator, per_species: int) -> list[list]:
    """Rows of four measurements and the species, the species interleaved."""
    rows = []
    for _ in range(per_species):
        for name, stats in SPECIES.items():
            values = [rng.normal(mean, std) for mean, std in stats]
            rows.append(
                [round(values[0], 1), round(values[1], 1), round(values[2]), int(round(values[3], -1)), name]
            )
    return rows


def write(name: str, header: list[str], rows: list[list]) -> None:
    with open(HERE / name, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def main() -> None:
    rng = np.random.default_rng(18)
    write("houses.csv", ["area", "rooms", "age", "price"], houses(rng, 200))
    new = houses(rng, 5)
    write(
        "new_houses.csv", ["id", "area", "rooms", "age"], [[101 + i, *row[:3]] for i, row in enumerate(new)]
    )
    write(
        "penguins.csv",
        ["bill_length", "bill_depth", "flipper_length", "body_mass", "species"],
        penguins(rng, 50),
    )
    new = penguins(rng, 2)[:4]
    write(
        "new_penguins.csv",
        ["id", "bill_length", "bill_depth", "flipper_length", "body_mass"],
        [[f"p{i + 1}", *row[:4]] for i, row in enumerate(new)],
    )


if __name__ == "__main__":
    main()
