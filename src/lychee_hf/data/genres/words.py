"""The words every genre draws on: people's first names and surnames, places, firms' endings, project names and the
values of facts (dates, amounts, durations, file names), each formatted as documents of that genre write them.

Values are drawn through a `Plan` (`base.py`), which rejects any that would repeat the document's answer or name
its absent subject."""

import datetime
import random

FIRST_NAMES = [
    "Kofi", "Ama", "Kwame", "Abena", "Yaw", "Efua", "Priya", "Arjun", "Meera", "Rohan", "Sunita", "Wei", "Mei",
    "Jun", "Hana", "Kenji", "Yuki", "Omar", "Layla", "Yusuf", "Amira", "Tariq", "Nadia", "Sofia", "Mateo", "Lucia",
    "Diego", "Elena", "Pablo", "Ingrid", "Lars", "Astrid", "Nils", "Freya", "Oskar", "Chloe", "Hugo", "Camille",
    "Aoife", "Ciaran", "Niamh", "Declan", "Fiona", "Callum", "Isla", "Ewan", "Grace", "Daniel", "Rachel", "Thomas",
    "Helen", "Peter", "Margaret", "Samuel", "Olivia", "Zainab", "Chidi", "Ngozi", "Emeka", "Tomasz", "Agnieszka",
    "Pavel", "Irina", "Bruno", "Marta",
]  # fmt: skip
SURNAMES = [
    "Boateng", "Mensah", "Owusu", "Asante", "Patel", "Sharma", "Iyer", "Chen", "Wang", "Zhang", "Tanaka", "Sato",
    "Haddad", "Rahman", "Farouk", "Garcia", "Moreno", "Rossi", "Bianchi", "Lindqvist", "Johansson", "Nilsen",
    "Dubois", "Moreau", "Lefevre", "Murphy", "Gallagher", "MacLeod", "Fraser", "Campbell", "Thompson", "Whitaker",
    "Hargreaves", "Pemberton", "Ashworth", "Okafor", "Adeyemi", "Nwosu", "Kowalski", "Nowak", "Petrov", "Novak",
    "Fischer", "Brandt", "Keller", "Horvath", "Silva", "Costa", "Almeida", "Kaur", "Singh", "Nakamura", "Kim",
    "Park", "Osei", "Danso", "Quartey", "Byrne", "Doyle",
]  # fmt: skip
PLACES = [
    "Northgate", "Eastbrook", "Millbank", "Harrowfield", "Ashdown", "Kingsmere", "Westholme", "Redcliffe",
    "Stonebridge", "Fairhaven", "Larkhill", "Brackenridge", "Oakhurst", "Thornbury", "Elmstead", "Silverdale",
    "Greystone", "Denholm", "Coldharbour", "Hazelmere", "Broadwater", "Pinewood", "Marshfield", "Glenrothes",
    "Southwold", "Ravenscar", "Holloway", "Brookside", "Whitcombe", "Lowestoft",
]  # fmt: skip
# Project, product and service names start with one of these (never a place: places name sites and firms).
EMBLEMS = [
    "Kestrel", "Heron", "Osprey", "Linnet", "Merlin", "Plover", "Curlew", "Avocet", "Bittern", "Dunlin", "Egret",
    "Fulmar", "Gannet", "Harrier", "Kittiwake", "Lapwing", "Nightjar", "Oriel", "Petrel", "Redwing", "Siskin",
    "Tern", "Wagtail", "Whimbrel",
]  # fmt: skip
FIRM_ENDINGS = [
    "Consulting", "Engineering Ltd", "& Partners", "Logistics", "Facilities Services", "Surveyors LLP", "Systems",
    "Group", "Construction", "Associates", "Technical Services", "Contracting",
]  # fmt: skip
MONTHS = [
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November",
    "December",
]  # fmt: skip
_DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
YEARS = (2024, 2028)


def person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(SURNAMES)}"


def firm(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return f"{rng.choice(PLACES)} {rng.choice(FIRM_ENDINGS)}"
    return f"{rng.choice(SURNAMES)} {rng.choice(FIRM_ENDINGS)}"


def date(rng: random.Random, style: str = "long") -> str:
    """A date in `style`: `"long"` (14 March 2026), `"iso"` (2026-03-14) or `"day"` (Saturday 14 March 2026)."""
    year, month = rng.randint(*YEARS), rng.randrange(12)
    day = rng.randint(1, _DAYS_IN_MONTH[month])
    if style == "iso":
        return f"{year}-{month + 1:02d}-{day:02d}"
    text = f"{day} {MONTHS[month]} {year}"
    if style == "day":
        return f"{datetime.date(year, month + 1, day):%A} {text}"
    return text


def amount(rng: random.Random, low: int, high: int, currency: str = "£", step: int = 50) -> str:
    """A sum of money between `low` and `high` in whole multiples of `step`, e.g. £41,250."""
    return f"{currency}{rng.randrange(low, high, step):,}"


def quantity(rng: random.Random, low: int, high: int, unit: str) -> str:
    """A whole number with its unit: "45 days", "512 MiB"."""
    return f"{rng.randint(low, high)} {unit}"


def percent(rng: random.Random, low: float = 50.0, high: float = 99.9) -> str:
    return f"{rng.uniform(low, high):.1f}%"


def file_name(rng: random.Random, stems: list[str], extensions: list[str], separator: str = "_") -> str:
    """Two different stems and an extension: `risk_register_v3.xlsx`, `sync-hosts.conf`."""
    first, second = rng.sample(stems, 2)
    version = f"{separator}v{rng.randint(2, 9)}" if rng.random() < 0.4 else ""
    return f"{first}{separator}{second}{version}.{rng.choice(extensions)}"


def price(rng: random.Random, low: int, high: int, currency: str = "£") -> str:
    """A price in pounds and pence between `low` and `high`, e.g. £12.37."""
    return f"{currency}{rng.randint(low * 100, high * 100) / 100:,.2f}"
