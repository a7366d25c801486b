"""Presigned-looking S3 objects on this server, checked as S3 checks a SigV4 query signature's
expiry (403 `AccessDenied` "Request has expired") and signature (403 `SignatureDoesNotMatch`)."""

from __future__ import annotations

import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from lswh_standin.state import BadRequest, S3Object, State, json_body, now

DEFAULT_BUCKET = "lswh-standin"


def _s3_error(status: int, code: str, message: str) -> Response:
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{message}</Message></Error>"
    )
    return Response(body, status_code=status, media_type="application/xml")


async def read_object(request: Request, state: State) -> Response:
    bucket, key = request.path_params["bucket"], request.path_params["key"]
    params = request.query_params
    amz_date, expires = params.get("X-Amz-Date", ""), params.get("X-Amz-Expires", "")
    signature = params.get("X-Amz-Signature", "")
    if not signature or not hmac.compare_digest(signature, state.sign(bucket, key, amz_date, expires)):
        return _s3_error(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        )
    signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    if now() > signed_at + timedelta(seconds=int(expires)):
        return _s3_error(403, "AccessDenied", "Request has expired")
    obj = state.objects.get(f"{bucket}/{key}")
    if obj is None:
        return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
    if obj.redirect_to is not None:
        return RedirectResponse(obj.redirect_to, status_code=302)
    return Response(obj.data, media_type="application/json")


async def admin_put(request: Request, state: State) -> Response:
    """Store an object; answer a presigned-looking URL to it on this server."""
    body = await json_body(request)
    if not isinstance(body, dict):
        raise BadRequest("body must be an object")
    bucket = str(body.get("bucket") or DEFAULT_BUCKET)
    key = str(body.get("key") or f"runs/{uuid.uuid4()}.json")
    data = json.dumps(body.get("body")).encode()
    size = int(body.get("size_bytes") or 0)
    # Trailing whitespace keeps the padded object valid JSON.
    data += b" " * max(0, size - len(data))
    state.objects[f"{bucket}/{key}"] = S3Object(data, body.get("redirect_to"))
    expires_in = int(body.get("expires_in", 3600))
    expires = max(expires_in, 1)
    # Already expired when expires_in <= 0: signed long enough ago.
    signed_at = now() - timedelta(seconds=0 if expires_in > 0 else 2 - expires_in)
    amz_date = signed_at.strftime("%Y%m%dT%H%M%SZ")
    query = {
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"AKIASTANDIN/{amz_date[:8]}/us-east-1/s3/aws4_request",
        "X-Amz-Date": amz_date,
        "X-Amz-Expires": str(expires),
        "X-Amz-SignedHeaders": "host",
        "X-Amz-Signature": state.sign(bucket, key, amz_date, str(expires)),
    }
    base = str(request.base_url).rstrip("/")
    url = f"{base}/s3/{bucket}/{quote(key)}?{urlencode(query)}"
    return JSONResponse({"url": url, "s3_url": f"s3://{bucket}/{key}", "key": key, "bucket": bucket})


async def admin_delete(request: Request, state: State) -> Response:
    name = f"{request.query_params.get('bucket') or DEFAULT_BUCKET}/{request.path_params['key']}"
    return JSONResponse({"deleted": state.objects.pop(name, None) is not None})
