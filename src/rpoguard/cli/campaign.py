"""campaign add|list: which principal a campaign calls for, automated or not, its attempt cap."""

from __future__ import annotations

import argparse

from rpoguard.cli import options
from rpoguard.cli.common import EXIT_OK, StoreCommand, Subcommands, UsageError, command, group
from rpoguard.cli.listing import known_principal, list_command, listing, when
from rpoguard.config import Config
from rpoguard.db.store import Store
from rpoguard.policy import CampaignFacts
from rpoguard.timeutil import iso


async def cmd_campaign_add(args: argparse.Namespace, store: Store, config: Config) -> int:
    if (args.max_attempts is None) != (args.per_days is None):
        raise UsageError("--max-attempts and --per-days go together (N calls per D days)")
    before = await store.get_campaign(args.id)
    await store.add_campaign(args.id, args.principal, args.automated, args.max_attempts, args.per_days)
    after = await store.get_campaign(args.id)
    assert after is not None
    print(f"campaign {args.id} {'added' if before is None else 'updated'}: {_describe_campaign(after)}")
    if before is not None and _describe_campaign(before) != _describe_campaign(after):
        # Re-running `campaign add` replaces every setting: say what changed, since it matters legally.
        print(f"  was: {_describe_campaign(before)}")
    return EXIT_OK


def _describe_campaign(campaign: CampaignFacts) -> str:
    kind = "automated" if campaign.automated else "with live operators"
    cap = (f", at most {campaign.max_attempts} call(s) per {campaign.per_days} day(s) per number"
           if campaign.max_attempts else ", no attempt cap")
    return f"principal {campaign.principal_id}, {kind}{cap}"


async def cmd_campaign_list(args: argparse.Namespace, store: Store, config: Config) -> int:
    principal = await known_principal(store, args.principal)
    return await listing(args, store.list_campaigns(principal_id=principal, limit=args.limit), "campaign", (
        ("ID", lambda c: c.id), ("PRINCIPAL", lambda c: c.principal_id),
        ("AUTOMATED", lambda c: "yes" if c.automated else "no"),
        ("ATTEMPT CAP", lambda c: f"{c.max_attempts} per {c.per_days} day(s)" if c.max_attempts else None),
        ("ADDED", lambda c: when(c.created_at)),
    ), lambda c: {"id": c.id, "principal": c.principal_id, "automated": c.automated,
                  "max_attempts": c.max_attempts, "per_days": c.per_days, "created_at": iso(c.created_at)})


def register(commands: Subcommands) -> None:
    campaigns = group(commands, "campaign", "campaigns: which principal, automated or not, attempt cap")
    p = command(campaigns, "add", StoreCommand(cmd_campaign_add, creates_database=True), "add or update a campaign")
    p.add_argument("id", metavar="ID", help="the campaign name the dialplan passes, e.g. spring26")
    p.add_argument("--principal", required=True, metavar="ID", help="the principal the campaign calls for")
    p.add_argument("--automated", action="store_true",
                   help="calls without a live operator (robocalls): every number then needs consent")
    p.add_argument("--max-attempts", type=options.positive_int, metavar="N",
                   help="at most N allowed calls per number...")
    p.add_argument("--per-days", type=options.positive_int, metavar="D",
                   help="...in any D days (with --max-attempts)")
    p = list_command(campaigns, StoreCommand(cmd_campaign_list),
                     "list the campaigns with their principal and attempt cap")
    p.add_argument("--principal", metavar="ID", help="only this principal's campaigns")
