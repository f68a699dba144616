"""Appointment descriptors (provider, location, type, the EHR's id) are encrypted at rest and
looked up by blind index (issue #11); migration patients 0004 seals rows written before it."""

from __future__ import annotations

import datetime

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from accounts.tenancy import tenant_scope
from patients.models import Appointment
from patients.selectors import descriptor_choices
from patients.services import appointment_create, appointment_update, descriptor_index
from tests.conftest import _app_role_and_owner, _switch_role
from tests.factories import make_appointment, make_patient

DESCRIPTORS = {"provider_name": "Dr. Zelda Okonkwo", "location_name": "Oncology Wing B",
               "appointment_type": "Chemo infusion", "external_id": "SCH-4471"}
BEFORE = ("patients", "0003_patient_phone_optional")


def _raw_row(pk) -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM patients_appointment WHERE id = %s", [pk])
        names = [c.name for c in cursor.description]
        return dict(zip(names, cursor.fetchone(), strict=True))


def _stored_text(row: dict) -> bytes:
    return b"".join(bytes(v) if isinstance(v, (bytes, memoryview)) else str(v).encode() for v in row.values())


def _book(tenant, owner, **values):
    patient = make_patient(tenant=tenant, actor=owner)
    starts = timezone.now() + datetime.timedelta(days=2)
    return appointment_create(tenant=tenant, actor=owner, patient=patient, starts_at=starts,
                              ends_at=starts + datetime.timedelta(minutes=30), source="fhir", **values)


def test_descriptors_are_sealed_and_indexed(tenant_a, alice):
    tenant, owner = tenant_a, alice
    with tenant_scope(tenant):
        appointment = _book(tenant, owner, **DESCRIPTORS)
        row = _raw_row(appointment.pk)
        stored = _stored_text(row)
        for value in DESCRIPTORS.values():
            assert value.encode() not in stored
        assert row["location_index"] == descriptor_index(tenant, "location_name", "oncology  wing b")
        assert row["type_index"] == descriptor_index(tenant, "appointment_type", "CHEMO INFUSION")
        assert row["external_id_index"] == descriptor_index(tenant, "external_id", "SCH-4471")
        # Identifiers keep their case; names don't.
        assert descriptor_index(tenant, "external_id", "sch-4471") != row["external_id_index"]
        fresh = Appointment.objects.get(pk=appointment.pk)
        assert {name: getattr(fresh, name) for name in DESCRIPTORS} == DESCRIPTORS


def test_indexes_follow_an_update_and_blank_values_have_none(tenant_a, alice):
    tenant, owner = tenant_a, alice
    with tenant_scope(tenant):
        appointment = _book(tenant, owner, **DESCRIPTORS)
        appointment_update(tenant=tenant, actor=owner, appointment=appointment, location_name="Annex",
                           appointment_type="")
        row = _raw_row(appointment.pk)
        assert row["location_index"] == descriptor_index(tenant, "location_name", "annex")
        assert row["type_index"] == ""
        assert Appointment.objects.get(pk=appointment.pk).appointment_type == ""


def test_the_same_external_id_twice_is_a_field_error(tenant_a, alice):
    from accounts.errors import ApplicationError

    tenant, owner = tenant_a, alice
    with tenant_scope(tenant):
        _book(tenant, owner, external_id="E-1")
        with pytest.raises(ApplicationError) as caught:
            _book(tenant, owner, external_id="E-1")
        assert set(caught.value.fields) == {"external_id"}
        _book(tenant, owner, external_id="e-1")  # another id


def test_indexes_differ_between_clinics(tenant_a, tenant_b):
    a, b = tenant_a, tenant_b
    with tenant_scope(a):
        in_a = descriptor_index(a, "location_name", "Main office")
    with tenant_scope(b):
        in_b = descriptor_index(b, "location_name", "Main office")
    assert in_a != in_b


def test_choices_show_each_location_once_whatever_its_case(tenant_a, alice):
    tenant, owner = tenant_a, alice
    with tenant_scope(tenant):
        patient = make_patient(tenant=tenant, actor=owner)
        for n, name in enumerate(("Main office", "main  OFFICE", "Annex", "")):
            make_appointment(tenant=tenant, patient=patient, actor=owner, location_name=name,
                             starts_at=timezone.now() + datetime.timedelta(days=1, hours=n))
        choices = descriptor_choices(name="location_name")
    assert len(choices) == 2 and choices[0] == "Annex" and choices[1].casefold().split() == ["main", "office"]


def _migrate(targets) -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(targets)


def _latest() -> list[tuple[str, str]]:
    """Every app's latest migration: going back to BEFORE also unapplies other apps' migrations
    that depend on patients 0004, and coming back must re-apply them too."""
    executor = MigrationExecutor(connection)
    return executor.loader.graph.leaf_nodes()


def test_the_migration_seals_existing_rows_and_going_back_opens_them(committed_db, tenant_a, alice):
    tenant, owner = tenant_a, alice
    with tenant_scope(tenant):
        appointment = _book(tenant, owner, **DESCRIPTORS)
    _, owner_role = _app_role_and_owner()
    if owner_role:  # schema changes are the owner's (as `manage.py migrate` runs in production)
        _switch_role(None, user=owner_role["USER"], password=owner_role.get("PASSWORD"))
    latest = _latest()
    _migrate([BEFORE])
    try:
        with tenant_scope(tenant):  # RLS is forced on the owner too
            row = _raw_row(appointment.pk)
        assert {name: row[name] for name in DESCRIPTORS} == DESCRIPTORS  # opened into plain columns
    finally:
        _migrate(latest)
    with tenant_scope(tenant):
        row = _raw_row(appointment.pk)
    for value in DESCRIPTORS.values():
        assert value.encode() not in _stored_text(row)
    with tenant_scope(tenant):
        fresh = Appointment.objects.get(pk=appointment.pk)
        assert {name: getattr(fresh, name) for name in DESCRIPTORS} == DESCRIPTORS
        assert fresh.location_index == descriptor_index(tenant, "location_name", DESCRIPTORS["location_name"])
        assert fresh.external_id_index == descriptor_index(tenant, "external_id", DESCRIPTORS["external_id"])
