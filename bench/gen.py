#!/usr/bin/env python3
"""Deterministic CSV generator for the benchmark (bench/run.sh calls it).

    bench/gen.py clean ROWS OUT        ROWS valid rows, unique lower-case emails
    bench/gen.py dirty ROWS OUT        ROWS rows: 1% invalid, 1% repeats of earlier emails
    bench/gen.py sorted ROWS OUT       the clean file's rows, sorted by email (byte order, as
                                       `ORDER BY email` under the C collation exports them)
    bench/gen.py fresh ROWS OUT        ROWS valid rows whose emails no clean file holds (to load
                                       into a table that already holds a clean file's rows)

Same arguments, same bytes (fixed seed, no dependence on the Python hash seed). Prints one
JSON line describing the file (rows, invalid, duplicates) so that the caller can check the
importer's counters exactly.

Dirty file: the invalid rows are a mix of bad emails, missing emails and wrong column counts
(every one of them is an error whatever the validator's finer rules); the duplicates repeat
the email of a valid row at least DUP_MIN_DISTANCE rows earlier (so in an earlier batch, not
the neighbouring line), half of them in a different letter case. Both kinds are spread
uniformly over the file.
"""

import json
import random
import sys

SEED = 20261126
DUP_MIN_DISTANCE = 1000

FIRST = (
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara "
    "Richard Susan Joseph Jessica Thomas Sarah Charles Karen Christopher Lisa Daniel Nancy "
    "Matthew Betty Anthony Margaret Mark Sandra Donald Ashley Steven Kimberly Paul Emily "
    "Andrew Donna Joshua Michelle Kenneth Carol Kevin Amanda Brian Dorothy George Melissa "
    "Timothy Deborah Ronald Stephanie Edward Rebecca Jason Sharon Jeffrey Laura Ryan Cynthia "
    "Jacob Kathleen Gary Amy Nicholas Angela Eric Shirley Jonathan Anna Stephen Brenda Larry "
    "Pamela Justin Emma Scott Nicole Brandon Helen Benjamin Samantha Samuel Katherine Gregory "
    "Christine Alexander Debra Frank Rachel Patrick Carolyn Raymond Janet Jack Catherine "
    "Dennis Maria Jerry Heather Tyler Diane Aaron Ruth Jose Julie Adam Olivia Nathan Joyce "
    "Henry Virginia Zachary Victoria Douglas Kelly Peter Lauren Kyle Christina Noah Joan "
    "Ethan Evelyn Jeremy Judith Walter Megan Christian Andrea Keith Cheryl Roger Hannah "
    "Terry Jacqueline Austin Martha Sean Gloria Gerald Teresa Carl Ann Harold Sara Dylan "
    "Madison Arthur Frances Lawrence Kathryn Jordan Janice Jesse Jean Bryan Abigail Billy "
    "Alice Bruce Judy Gabriel Sophia Joe Grace Logan Denise Alan Amber Juan Doris Albert "
    "Marilyn Willie Danielle Elijah Beverly Wayne Isabella Randy Theresa Vincent Diana "
    "Mason Natalie Roy Brittany Ralph Charlotte Bobby Marie Russell Kayla Bradley Alexis "
    "Philip Lori Eugene Chloe Zoe"
).split()
LAST = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez "
    "Lopez Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson "
    "White Harris Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott "
    "Torres Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter "
    "Roberts Gomez Phillips Evans Turner Diaz Parker Cruz Edwards Collins Reyes Stewart "
    "Morris Morales Murphy Cook Rogers Gutierrez Ortiz Morgan Cooper Peterson Bailey Reed "
    "Kelly Howard Ramos Kim Cox Ward Richardson Watson Brooks Chavez Wood James Bennett Gray "
    "Mendoza Ruiz Hughes Price Alvarez Castillo Sanders Patel Myers Long Ross Foster Jimenez "
    "Powell Jenkins Perry Russell Sullivan Bell Coleman Butler Henderson Barnes Gonzales "
    "Fisher Vasquez Simmons Romero Jordan Patterson Alexander Hamilton Graham Reynolds "
    "Griffin Wallace Moreno West Cole Hayes Bryant Herrera Gibson Ellis Tran Medina Aguilar "
    "Stevens Murray Ford Castro Marshall Owens Harrison Fernandez McDonald Woods Washington "
    "Kennedy Wells Vargas Henry Chen Freeman Webb Tucker Guzman Burns Crawford Olson Simpson "
    "Porter Hunter Gordon Mendez Silva Shaw Snyder Mason Dixon Munoz Hunt Hicks Holmes "
    "Palmer Wagner Black Robertson Boyd Rose Stone Salazar Fox Warren Mills Meyer Rice "
    "Schmidt Garza Daniels Ferguson Nichols Stephens Soto Weaver Ryan Gardner Payne Grant "
    "Dunn Kelley Spencer Hawkins Arnold Pierce Hansen Peters Santos Hart Bradley Knight "
    "Elliott Cunningham Duncan Armstrong Hudson Carroll Lane Riley Andrews Alvarado Ray "
    "Delgado Berry Perkins Hoffman Johnston Matthews Pena Richards Contreras Willis "
    "Carpenter Lawrence Sandoval O'Brien"
).split()
CITIES = (
    "New York|Los Angeles|Chicago|Houston|Phoenix|Philadelphia|San Antonio|San Diego|Dallas|"
    "San Jose|Austin|Jacksonville|Fort Worth|Columbus|Charlotte|Indianapolis|San Francisco|"
    "Seattle|Denver|Washington|Boston|El Paso|Nashville|Detroit|Oklahoma City|Portland|"
    "Las Vegas|Memphis|Louisville|Baltimore|Milwaukee|Albuquerque|Tucson|Fresno|Sacramento|"
    "Kansas City|Mesa|Atlanta|Omaha|Colorado Springs|Raleigh|Long Beach|Virginia Beach|"
    "Miami|Oakland|Minneapolis|Tulsa|Bakersfield|Wichita|Arlington|Aurora|Tampa|New Orleans|"
    "Cleveland|Honolulu|Anaheim|Lexington|Stockton|Corpus Christi|Henderson|Riverside|"
    "Newark|Saint Paul|Santa Ana|Cincinnati|Irvine|Orlando|Pittsburgh|St. Louis|Greensboro|"
    "Jersey City|Anchorage|Lincoln|Plano|Durham|Buffalo|Chandler|Chula Vista|Toledo|Madison|"
    "Gilbert|Reno|Fort Wayne|North Las Vegas|St. Petersburg|Lubbock|Irving|Laredo|"
    "Winston-Salem|Chesapeake|Glendale|Garland|Scottsdale|Norfolk|Boise|Fremont|Spokane|"
    "Santa Clarita|Baton Rouge|Richmond|Hialeah|\"Washington, D.C.\"|\"Boise City, ID\""
).split("|")
DOMAINS = (
    "gmail.com yahoo.com outlook.com hotmail.com icloud.com proton.me aol.com mail.com "
    "example.com example.org fastmail.com zoho.com gmx.net yandex.com live.com"
).split()

# Invalid rows: (kind, template). {e} is a valid-looking email, {f}/{l}/{p}/{c} the fields.
INVALID = [
    ("invalid_email", "{u}.{d}"),  # no @
    ("invalid_email", "{u}@@{d}"),
    ("invalid_email", "{u}@localhost"),  # no dot in the domain
    ("invalid_email", "{u} x@{d}"),  # space in the local part
    ("invalid_email", ".{u}@{d}"),
    ("missing_email", ""),
    ("missing_email", "   "),
    ("wrong_column_count", None),
]


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("clean", "dirty", "sorted", "fresh"):
        sys.exit(__doc__)
    kind, rows, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    # The sorted file holds the clean file's rows: the same random stream.
    rng = random.Random(f"{SEED}:{'clean' if kind == 'sorted' else kind}")
    randrange = rng.randrange
    nf, nl, nc, nd = len(FIRST), len(LAST), len(CITIES), len(DOMAINS)
    first_lower = [f.lower() for f in FIRST]
    last_lower = [l.lower().replace("'", "") for l in LAST]

    bad, dup = set(), set()
    if kind == "dirty":
        n_bad = n_dup = rows // 100
        lo = min(DUP_MIN_DISTANCE, rows // 10)
        picks = rng.sample(range(lo, rows), n_bad + n_dup)
        bad, dup = set(picks[:n_bad]), set(picks[n_bad:])
    emails = [] if kind == "dirty" else None  # emails of valid, original rows (for dup picks)
    counts = {"rows": rows, "invalid": 0, "duplicates": 0}

    buf = ["email,first_name,last_name,phone,city\n"]
    with open(out, "w", encoding="utf-8", newline="") as fh:
        for i in range(rows):
            fi, li = randrange(nf), randrange(nl)
            first, last = FIRST[fi], LAST[li]
            phone = "%03d555%04d" % (200 + randrange(800), randrange(10000))
            city = CITIES[randrange(nc)]
            # Unique because of the row number; the style varies a little.
            style = i % 3
            if style == 0:
                user = "%s.%s%d" % (first_lower[fi], last_lower[li], i)
            elif style == 1:
                user = "%s%s.%d" % (first_lower[fi][0], last_lower[li], i)
            else:
                user = "%s_%d" % (first_lower[fi], i)
            if kind == "fresh":
                user += "f"  # a clean file's users end in a digit
            email = "%s@%s" % (user, DOMAINS[randrange(nd)])
            if i in bad:
                counts["invalid"] += 1
                code, tpl = INVALID[randrange(len(INVALID))]
                if tpl is None:
                    if randrange(2):
                        buf.append("%s,%s,%s,%s\n" % (email, first, last, phone))
                    else:
                        buf.append("%s,%s,%s,%s,%s,extra\n" % (email, first, last, phone, city))
                else:
                    e = tpl.format(u=user, d=DOMAINS[randrange(nd)])
                    buf.append("%s,%s,%s,%s,%s\n" % (e, first, last, phone, city))
            elif i in dup:
                counts["duplicates"] += 1
                # An email of a valid row at least DUP_MIN_DISTANCE rows back.
                limit = len(emails)
                while True:
                    j = randrange(limit)
                    if j < limit - DUP_MIN_DISTANCE or limit <= DUP_MIN_DISTANCE:
                        break
                e = emails[j]
                if randrange(2):
                    e = e.upper()
                buf.append("%s,%s,%s,%s,%s\n" % (e, first, last, phone, city))
            else:
                if emails is not None:
                    emails.append(email)
                buf.append("%s,%s,%s,%s,%s\n" % (email, first, last, phone, city))
            if len(buf) >= 50000 and kind != "sorted":
                fh.write("".join(buf))
                buf.clear()
        if kind == "sorted":
            header, body = buf[0], buf[1:]
            body.sort(key=lambda line: line.split(",", 1)[0])
            buf = [header] + body
        fh.write("".join(buf))
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
