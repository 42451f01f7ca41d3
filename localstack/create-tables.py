#!/usr/bin/env python3
"""Creates the DynamoDB tables declared in infra/template.yaml.

The template is the single source of truth: every AWS::DynamoDB::Table
resource is created as declared (keys, indexes, billing, stream, TTL,
point-in-time recovery), with ${TablePrefix} substituted. Existing tables
are left alone, unless --recreate.

Usage: create-tables.py [--endpoint URL] [--prefix chat-] [--recreate]
"""
import argparse
import os
import sys

import boto3
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATE = os.path.join(HERE, "..", "infra", "template.yaml")


class CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation short-form tags (!Sub, !Ref, ...) as {tag: value}."""


def _tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {suffix: value}


CfnLoader.add_multi_constructor("!", _tag)


def resolve(value, params):
    """Resolves the few intrinsics table definitions use."""
    if isinstance(value, dict) and len(value) == 1:
        (k, v), = value.items()
        if k in ("Sub", "Fn::Sub"):
            out = v if isinstance(v, str) else v[0]
            for name, p in params.items():
                out = out.replace("${%s}" % name, p)
            return out
        if k in ("Ref",):
            return params[v]
    return value


def tables(template_path, prefix):
    with open(template_path) as f:
        doc = yaml.load(f, Loader=CfnLoader)
    params = {n: str(p.get("Default", "")) for n, p in doc.get("Parameters", {}).items()}
    params["TablePrefix"] = prefix
    for logical, res in doc["Resources"].items():
        if res.get("Type") == "AWS::DynamoDB::Table":
            props = dict(res["Properties"])
            props["TableName"] = resolve(props["TableName"], params)
            yield logical, props


def create(client, props):
    args = {
        "TableName": props["TableName"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
    }
    if "GlobalSecondaryIndexes" in props:
        args["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    if "StreamSpecification" in props:
        args["StreamSpecification"] = {
            "StreamEnabled": True,
            "StreamViewType": props["StreamSpecification"]["StreamViewType"],
        }
    client.create_table(**args)
    client.get_waiter("table_exists").wait(TableName=args["TableName"])
    ttl = props.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        try:
            client.update_time_to_live(
                TableName=args["TableName"],
                TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
            )
        except Exception as e:  # dynalite (the benchmarks' store) has no TTL
            print(f"  (time to live not set: {e})", file=sys.stderr)
    pitr = props.get("PointInTimeRecoverySpecification", {})
    if pitr.get("PointInTimeRecoveryEnabled"):
        try:
            client.update_continuous_backups(
                TableName=args["TableName"],
                PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
            )
        except Exception as e:  # emulators may not implement it
            print(f"  (point-in-time recovery not set: {e})", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoint", default=os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"))
    ap.add_argument("--prefix", default=os.environ.get("CHAT_TABLE_PREFIX", "chat-"))
    ap.add_argument("--template", default=TEMPLATE)
    ap.add_argument("--recreate", action="store_true", help="drop and create existing tables")
    a = ap.parse_args()
    client = boto3.client(
        "dynamodb",
        endpoint_url=a.endpoint,
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
    )
    existing = set(client.list_tables()["TableNames"])
    for logical, props in tables(a.template, a.prefix):
        name = props["TableName"]
        if name in existing:
            if not a.recreate:
                print(f"table {name} exists ({logical})")
                continue
            client.delete_table(TableName=name)
            client.get_waiter("table_not_exists").wait(TableName=name)
        create(client, props)
        print(f"created table {name} ({logical})")


if __name__ == "__main__":
    main()
