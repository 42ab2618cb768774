"""The OAuth clients of the demo (``patientkontrakt demo``).

* ``pk-personal``: the staff pages (``/personal``), public, authorization code + PKCE;
* ``pk-mitt``: the patient e-service (``/mitt``), public, authorization code + PKCE;
* ``demo-ehr``: a backend EHR system acting for Vårdcentralen Björkbacken (client credentials,
  ``private_key_jwt``). Its private key (EC P-384) is written next to the server's signing key
  as ``demo-ehr-key.pem``, so ``patientkontrakt token demo-ehr`` can get a token for curl.
"""

from __future__ import annotations

import json
from pathlib import Path

from joserfc.jwk import ECKey, KeySet

from patientkontrakt.config import Settings
from patientkontrakt.domain.identifiers import HSA_ID
from patientkontrakt.fhir.service import FhirService
from patientkontrakt.security.clients import Clients
from patientkontrakt.security.identity import identifier_value
from patientkontrakt.security.keys import write_private

DEMO_EHR_UNIT = "demo-org-vc-bjorkbacken"
STAFF_SCOPES = "openid fhirUser offline_access user/*.cruds user/AuditEvent.rs"
PATIENT_SCOPES = "openid fhirUser launch/patient offline_access patient/*.rs patient/Goal.cu patient/AuditEvent.rs"


def demo_ehr_key_path(settings: Settings) -> Path:
    """Where the demo EHR's private key is kept: next to the server's signing key."""
    return settings.signing_key.parent / "demo-ehr-key.pem"


def demo_ehr_key(path: Path) -> ECKey:
    """The demo EHR's private key at ``path``, made there first if there is none (``OSError``
    where it cannot be written)."""
    if path.exists():
        return ECKey.import_key(path.read_bytes())
    key = ECKey.generate_key("P-384", private=True)
    write_private(path, key.as_pem(private=True))
    return key


async def register_demo_clients(service: FhirService, settings: Settings) -> Path:
    """Register (or refresh) the demo clients; returns the path of the demo EHR's private key."""
    base = settings.base_url.rstrip("/")
    clients = Clients(service.store)
    await clients.add("pk-personal", name="Patientkontrakt – personal", kind="public",
                      redirect_uris=[f"{base}/personal/callback"], scope=STAFF_SCOPES)
    await clients.add("pk-mitt", name="Mitt patientkontrakt", kind="public",
                      redirect_uris=[f"{base}/mitt/callback"], scope=PATIENT_SCOPES)
    key_path = demo_ehr_key_path(settings)
    key = demo_ehr_key(key_path)
    public = KeySet([ECKey.import_key(key.as_dict(private=False), parameters={"kid": key.thumbprint()})])
    async with service.store.reading() as unit:
        stored = await unit.get("Organization", DEMO_EHR_UNIT)
    unit_hsa = identifier_value(json.loads(stored.body), HSA_ID) if stored is not None else None
    if unit_hsa is None:
        raise RuntimeError(f"the demo region has no Organization/{DEMO_EHR_UNIT}; load it first")
    await clients.add("demo-ehr", name="Demo-journalsystem (Vårdcentralen Björkbacken)", kind="backend",
                      redirect_uris=[], jwks=json.dumps(public.as_dict(private=False)),
                      scope="system/*.cruds system/AuditEvent.rs", care_unit=unit_hsa)
    return key_path
