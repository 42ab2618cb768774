"""ownership_and_consent: who owns each resource, what the patient's Consents say, and why

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05

Sharing across care providers (Patientdatalagen 4 kap 4 §, 6 kap 2-4 §§): every resource row
records the care unit and care provider that created it (``owner_unit``, ``owner_provider``);
``consent_rule`` holds what each active samtycke or spärr says, for the access rules to probe;
the access log gains ``reason``, the reason typed for an emergency access, and an index by care
provider for the provider's log review. Rows written before
have no owner until the reindex that ``patientkontrakt migrate`` runs next (derivation 3 of
``fhir/reindex.py``) derives it from their content.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table('resource', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner_unit', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('owner_provider', sa.String(length=64), nullable=True))
    op.create_table('consent_rule',
    sa.Column('id', _KEY, autoincrement=True, nullable=False),
    sa.Column('consent_pk', _KEY, nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('recipient_unit', sa.String(length=64), nullable=True),
    sa.Column('recipient_provider', sa.String(length=64), nullable=True),
    sa.Column('custodian_unit', sa.String(length=64), nullable=True),
    sa.Column('custodian_provider', sa.String(length=64), nullable=True),
    sa.Column('starts', sa.DateTime(), nullable=True),
    sa.Column('ends', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['consent_pk'], ['resource.pk'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('consent_rule', schema=None) as batch_op:
        batch_op.create_index('ix_consent_rule_patient', ['patient_id', 'kind'], unique=False)
        batch_op.create_index('ix_consent_rule_consent', ['consent_pk'], unique=False)
    # The access log's tables refuse UPDATE (triggers of 0005); adding a column is not one.
    op.add_column('audit_log', sa.Column('reason', sa.Text(), nullable=True))
    # a provider's log reviewers read the entries of all its units
    op.create_index('ix_audit_care_provider', 'audit_log', ['care_provider', 'seq'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_audit_care_provider', table_name='audit_log')
    op.drop_column('audit_log', 'reason')
    with op.batch_alter_table('consent_rule', schema=None) as batch_op:
        batch_op.drop_index('ix_consent_rule_consent')
        batch_op.drop_index('ix_consent_rule_patient')
    op.drop_table('consent_rule')
    with op.batch_alter_table('resource', schema=None) as batch_op:
        batch_op.drop_column('owner_provider')
        batch_op.drop_column('owner_unit')
