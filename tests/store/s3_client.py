"""boto3 as the independent S3 client of the store tests; endpoint and keys from the AWS_* variables.

    s3_client.py mb BUCKET                  create a bucket
    s3_client.py put BUCKET KEY FILE        upload (boto3's own multipart above 8 MiB)
    s3_client.py get BUCKET KEY FILE        download
    s3_client.py ls BUCKET PREFIX           "KEY SIZE" lines, sorted
    s3_client.py parts BUCKET KEY           how many parts the object went up in (1: single PUT)
    s3_client.py uploads BUCKET             multipart uploads left open, one key a line
    s3_client.py iam-key                    print "KEY_ID SECRET" of a new IAM user allowed s3:*
    s3_client.py enforce-auth               from now on the server checks every signature (moto)
    s3_client.py strict-probe BUCKET        exit 0 if s3_server.py --strict rejects a bad payload
                                            hash and an unsigned x-amz-* header, as S3 does
"""

import hashlib
import json
import os
import sys
import urllib.error
import urllib.request

import boto3
from boto3.s3.transfer import TransferConfig


def client(service="s3"):
    return boto3.client(service, endpoint_url=os.environ["AWS_ENDPOINT_URL"],
                        region_name=os.environ.get("AWS_REGION", "us-east-1"))


def main(argv):
    cmd, args = argv[1], argv[2:]
    s3 = client()
    if cmd == "mb":
        s3.create_bucket(Bucket=args[0])
    elif cmd == "put":
        s3.upload_file(args[2], args[0], args[1], Config=TransferConfig(multipart_threshold=8 << 20))
    elif cmd == "get":
        s3.download_file(args[0], args[1], args[2])
    elif cmd == "ls":
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=args[0], Prefix=args[1])
        for page in pages:
            for obj in page.get("Contents", []):
                print(obj["Key"], obj["Size"])
    elif cmd == "parts":
        etag = s3.head_object(Bucket=args[0], Key=args[1])["ETag"].strip('"')
        print(etag.split("-")[1] if "-" in etag else 1)
    elif cmd == "uploads":
        for upload in s3.list_multipart_uploads(Bucket=args[0]).get("Uploads", []):
            print(upload["Key"])
    elif cmd == "iam-key":
        iam = client("iam")
        iam.create_user(UserName="tern")
        policy = {"Version": "2012-10-17",
                  "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName="tern", PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="tern")["AccessKey"]
        print(key["AccessKeyId"], key["SecretAccessKey"])
    elif cmd == "enforce-auth":
        url = os.environ["AWS_ENDPOINT_URL"] + "/moto-api/reset-auth"
        urllib.request.urlopen(urllib.request.Request(url, data=b"0", headers={"Content-Type": "text/plain"})).read()
    elif cmd == "strict-probe":
        url = f"{os.environ['AWS_ENDPOINT_URL']}/{args[0]}/strict-probe"
        auth = ("AWS4-HMAC-SHA256 Credential=probe/20240101/us-east-1/s3/aws4_request, "
                "SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=00")
        base = {"Authorization": auth, "x-amz-date": "20240101T000000Z"}
        cases = [({"x-amz-content-sha256": "0" * 64}, "XAmzContentSHA256Mismatch"),
                 ({"x-amz-content-sha256": hashlib.sha256(b"abc").hexdigest(), "x-amz-meta-a": "1"},
                  "not signed")]
        for headers, want in cases:
            req = urllib.request.Request(url, data=b"abc", method="PUT", headers={**base, **headers})
            try:
                urllib.request.urlopen(req).read()
                sys.exit(f"strict mode let through a request it should refuse ({want})")
            except urllib.error.HTTPError as e:
                body = e.read().decode()
                if want not in body:
                    sys.exit(f"strict mode: expected {want}, got {e.code} {body}")
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)
