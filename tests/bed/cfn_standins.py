"""CloudFormation resource types moto's stacks cannot create, which `ferry plan`'s
destination.yaml declares: each is created here in the emulator's own service backend, the
way CloudFormation would call the service, so `make demo` can deploy the generated stack.

What each stands in for (and what it does not do):
- AWS::SecretsManager::Secret: a secret with GenerateSecretString's password (or
  SecretString), as CloudFormation creates it.
- AWS::CertificateManager::Certificate: an ACM certificate for DomainName, ISSUED at once
  (CloudFormation waits for the DNS validation record in the hosted zone; the bed has no CA).
- AWS::CloudWatch::Alarm: PutMetricAlarm with the template's properties.
- AWS::ElastiCache::SubnetGroup / ReplicationGroup: the ElastiCache backend's, with
  AuthToken's `{{resolve:secretsmanager:…}}` resolved as CloudFormation does. The bed's TLS
  Redis server is what a migration then talks to; this is the API record of it.
- AWS::ElastiCache::ParameterGroup: moto has no ElastiCache parameter groups; its name and
  parameters are kept here (preflight checks the settings on the server itself).
- AWS::Scheduler::Schedule: EventBridge Scheduler's CreateSchedule (never fired: moto runs
  no schedules).
- AWS::ApplicationAutoScaling::ScalableTarget / ScalingPolicy: Application Auto Scaling's
  RegisterScalableTarget and PutScalingPolicy (nothing scales: moto has no metrics to act on).
- AWS::RDS::DBInstance gains ManageMasterUserPassword (the secret RDS creates) and the
  `MasterUserSecret.SecretArn` attribute, which moto's stack resource lacks; Port defaults to
  the engine's (moto's stacks give 3306 to every engine).

And what AWS refuses, refused here too: a secret with both SecretString and
GenerateSecretString, an RDS instance with a MasterUserPassword beside
ManageMasterUserPassword, an AuthToken outside 16-128 printable characters or with / " @, an
AuthToken without TransitEncryptionEnabled, MinCapacity above MaxCapacity; a resource whose
Condition is false is not listed among the stack's resources (moto lists it, typeless).
"""

import re
import secrets
import string

from moto.core.common_models import CloudFormationModel

def _refused(message):
    """What CloudFormation answers for a template the service refuses: a ValidationError (400)
    with the reason, never a server error."""
    from moto.cloudformation.exceptions import ValidationError

    return ValidationError(message=message)


# moto files each model under the second part of its module name.
MODULE = "bed.cfn_standins"
RESOLVE = re.compile(r"\{\{resolve:secretsmanager:([^}]+?):SecretString(?::([^:}]*))?[^}]*\}\}")


def _resolve_secrets(value, account_id, region_name):
    """Replaces `{{resolve:secretsmanager:<arn>:SecretString[:key]}}` as CloudFormation does."""
    import json

    from moto.secretsmanager.models import secretsmanager_backends

    backend = secretsmanager_backends[account_id][region_name]

    def one(m):
        secret = backend.get_secret_value(m.group(1), None, None)["SecretString"]
        if m.group(2):
            return str(json.loads(secret)[m.group(2)])
        return secret

    return RESOLVE.sub(one, value) if isinstance(value, str) else value


class _StandIn:
    """The parts every stand-in shares: its physical id and no updates in place."""

    ATTRS: dict = {}

    def __init__(self, physical_id, attrs):
        self._physical_id = physical_id
        self._attrs = attrs

    @property
    def physical_resource_id(self):
        return self._physical_id

    @staticmethod
    def cloudformation_name_type():
        return ""

    @classmethod
    def cloudformation_type(cls):
        return cls.TYPE

    @classmethod
    def has_cfn_attr(cls, attr):
        return attr in cls.ATTRS

    def get_cfn_attribute(self, attribute_name):
        from moto.cloudformation.exceptions import UnformattedGetAttTemplateException

        if attribute_name in self._attrs:
            return self._attrs[attribute_name]
        raise UnformattedGetAttTemplateException()

    @classmethod
    def delete_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name):
        pass


class Secret(_StandIn, CloudFormationModel):
    __module__ = MODULE
    ATTRS = {"Id": 1}

    TYPE = "AWS::SecretsManager::Secret"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        from moto.secretsmanager.models import secretsmanager_backends

        props = cloudformation_json.get("Properties", {})
        value = props.get("SecretString")
        gen = props.get("GenerateSecretString")
        if value is not None and gen is not None:
            raise _refused("AWS::SecretsManager::Secret: SecretString and GenerateSecretString "
                             "are mutually exclusive")
        if value is None:
            gen = gen or {}
            alphabet = string.ascii_letters + string.digits
            if not gen.get("ExcludePunctuation"):
                alphabet += "!#$%&()*+,-.:;<=>?[]^_{|}~"
            alphabet = "".join(c for c in alphabet if c not in gen.get("ExcludeCharacters", ""))
            value = "".join(secrets.choice(alphabet) for _ in range(int(gen.get("PasswordLength", 32))))
        out = secretsmanager_backends[account_id][region_name].create_secret(
            name=props.get("Name") or resource_name, secret_string=value, secret_binary=None,
            description=props.get("Description"), tags=props.get("Tags") or [], kms_key_id=props.get("KmsKeyId"),
            client_request_token=None, replica_regions=[], force_overwrite=False)
        import json

        arn = json.loads(out)["ARN"] if isinstance(out, str) else out["ARN"]
        return cls(arn, {"Id": arn})


class Certificate(_StandIn, CloudFormationModel):
    __module__ = MODULE
    ATTRS = {"Id": 1}

    TYPE = "AWS::CertificateManager::Certificate"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        from moto.acm.models import acm_backends

        props = cloudformation_json["Properties"]
        backend = acm_backends[account_id][region_name]
        arn = backend.request_certificate(props["DomainName"], None, props.get("SubjectAlternativeNames") or [],
                                          props.get("Tags") or [])
        backend.get_certificate(arn).status = "ISSUED"
        return cls(arn, {"Id": arn})


class Alarm(_StandIn, CloudFormationModel):
    __module__ = MODULE
    ATTRS = {"Arn": 1}

    TYPE = "AWS::CloudWatch::Alarm"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        from moto.cloudwatch.models import cloudwatch_backends

        p = cloudformation_json["Properties"]
        name = p.get("AlarmName") or resource_name
        alarm = cloudwatch_backends[account_id][region_name].put_metric_alarm(
            name=name, namespace=p.get("Namespace"), metric_name=p.get("MetricName"),
            comparison_operator=p["ComparisonOperator"], evaluation_periods=int(p["EvaluationPeriods"]),
            period=int(p.get("Period", 60)), threshold=float(p.get("Threshold", 0)), statistic=p.get("Statistic"),
            description=p.get("AlarmDescription"), dimensions=p.get("Dimensions", []),
            alarm_actions=p.get("AlarmActions", []), ok_actions=p.get("OKActions", []),
            treat_missing_data=p.get("TreatMissingData"), unit=p.get("Unit"))
        return cls(name, {"Arn": alarm.alarm_arn})


class CacheParameterGroup(_StandIn, CloudFormationModel):
    """moto has no ElastiCache parameter groups: the name and parameters are kept here."""

    __module__ = MODULE
    GROUPS: dict = {}

    TYPE = "AWS::ElastiCache::ParameterGroup"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        p = cloudformation_json["Properties"]
        name = resource_name.lower()[:255]
        cls.GROUPS[name] = {"family": p["CacheParameterGroupFamily"], "parameters": dict(p.get("Properties", {}))}
        return cls(name, {})


class CacheSubnetGroup(_StandIn, CloudFormationModel):
    __module__ = MODULE
    TYPE = "AWS::ElastiCache::SubnetGroup"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        from moto.elasticache.models import elasticache_backends

        p = cloudformation_json["Properties"]
        name = (p.get("CacheSubnetGroupName") or resource_name).lower()[:255]
        elasticache_backends[account_id][region_name].create_cache_subnet_group(
            name, p["Description"], p["SubnetIds"], p.get("Tags"))
        return cls(name, {})


class CacheReplicationGroup(_StandIn, CloudFormationModel):
    __module__ = MODULE
    ATTRS = {"PrimaryEndPoint.Address": 1, "PrimaryEndPoint.Port": 1, "ReaderEndPoint.Address": 1,
             "ReaderEndPoint.Port": 1}

    TYPE = "AWS::ElastiCache::ReplicationGroup"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        from moto.elasticache.models import elasticache_backends

        p = cloudformation_json["Properties"]
        rid = (p.get("ReplicationGroupId") or resource_name).lower()[:40].rstrip("-")
        token = _resolve_secrets(p.get("AuthToken"), account_id, region_name)
        if token is not None and not (16 <= len(token) <= 128):
            raise _refused(f"ElastiCache refuses an AuthToken of {len(token)} characters (16 to 128)")
        if token is not None and any(not (32 < ord(c) < 127) or c in '/"@' for c in token):
            # Printable ASCII only, and none of / " @ (the value itself is never shown).
            raise _refused("ElastiCache refuses an AuthToken with a character outside printable "
                             "ASCII or one of / \" @")
        if token is not None and not p.get("TransitEncryptionEnabled"):
            raise _refused("ElastiCache refuses an AuthToken without TransitEncryptionEnabled")
        port = int(p.get("Port", 6379))
        group = elasticache_backends[account_id][region_name].create_replication_group(
            replication_group_id=rid, replication_group_description=p["ReplicationGroupDescription"],
            global_replication_group_id=None, primary_cluster_id=None,
            automatic_failover_enabled=bool(p.get("AutomaticFailoverEnabled")), multi_az_enabled=bool(p.get("MultiAZEnabled")),
            num_cache_clusters=int(p.get("NumCacheClusters", 1)), preferred_cache_cluster_azs=[],
            num_node_groups=None, replicas_per_node_group=None, node_group_configuration=[],
            cache_node_type=p["CacheNodeType"], engine=p.get("Engine", "redis"), engine_version=p.get("EngineVersion"),
            cache_parameter_group_name=p.get("CacheParameterGroupName"),
            cache_subnet_group_name=p.get("CacheSubnetGroupName"), cache_security_group_names=[],
            security_group_ids=p.get("SecurityGroupIds", []), tags=p.get("Tags") or [], snapshot_arns=[],
            snapshot_name=None, preferred_maintenance_window=None, port=port, notification_topic_arn=None,
            auto_minor_version_upgrade=bool(p.get("AutoMinorVersionUpgrade", True)),
            snapshot_retention_limit=int(p.get("SnapshotRetentionLimit", 0)), snapshot_window=None,
            auth_token=token, transit_encryption_enabled=bool(p.get("TransitEncryptionEnabled")),
            at_rest_encryption_enabled=bool(p.get("AtRestEncryptionEnabled")), kms_key_id=None,
            user_group_ids=[], log_delivery_configurations=[], data_tiering_enabled=False,
            network_type=None, ip_discovery=None, transit_encryption_mode=None, cluster_mode=None,
            serverless_cache_snapshot_name=None)
        primary = f"master.{rid}.bed.cache.amazonaws.com"
        for ng in getattr(group, "node_groups", []) or []:
            if isinstance(ng, dict) and ng.get("primary_endpoint_address"):
                primary = ng["primary_endpoint_address"]
        return cls(rid, {"PrimaryEndPoint.Address": primary, "PrimaryEndPoint.Port": str(port),
                         "ReaderEndPoint.Address": primary.replace("master.", "replica.", 1),
                         "ReaderEndPoint.Port": str(port)})


class Schedule(_StandIn, CloudFormationModel):
    __module__ = MODULE
    ATTRS = {"Arn": 1}

    TYPE = "AWS::Scheduler::Schedule"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        from moto.scheduler.models import scheduler_backends

        p = cloudformation_json["Properties"]
        name = (p.get("Name") or resource_name)[:64]
        schedule = scheduler_backends[account_id][region_name].create_schedule(
            description=p.get("Description"), end_date=None, flexible_time_window=p["FlexibleTimeWindow"],
            group_name=p.get("GroupName"), kms_key_arn=None, name=name,
            schedule_expression=p["ScheduleExpression"], schedule_expression_timezone=p.get("ScheduleExpressionTimezone"),
            start_date=None, state=p.get("State", "ENABLED"), target=p["Target"], action_after_completion=None)
        return cls(name, {"Arn": schedule.arn})


class ScalableTarget(_StandIn, CloudFormationModel):
    """Application Auto Scaling's RegisterScalableTarget (moto checks the ECS service exists)."""

    __module__ = MODULE

    TYPE = "AWS::ApplicationAutoScaling::ScalableTarget"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        from moto.applicationautoscaling.models import applicationautoscaling_backends

        p = cloudformation_json["Properties"]
        lo, hi = int(p["MinCapacity"]), int(p["MaxCapacity"])
        if lo > hi:
            raise _refused(f"MinCapacity {lo} is above MaxCapacity {hi}")
        applicationautoscaling_backends[account_id][region_name].register_scalable_target(
            p["ServiceNamespace"], p["ResourceId"], p["ScalableDimension"], lo, hi, p.get("RoleARN"), None)
        # CloudFormation's Ref of a scalable target: resource id, dimension and namespace.
        return cls(f"{p['ResourceId']}|{p['ScalableDimension']}|{p['ServiceNamespace']}", {})


class ScalingPolicy(_StandIn, CloudFormationModel):
    """Application Auto Scaling's PutScalingPolicy on the target ScalingTargetId names."""

    __module__ = MODULE
    ATTRS = {"Arn": 1}

    TYPE = "AWS::ApplicationAutoScaling::ScalingPolicy"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        from moto.applicationautoscaling.models import applicationautoscaling_backends

        p = cloudformation_json["Properties"]
        if p.get("ScalingTargetId"):
            resource_id, dimension, namespace = p["ScalingTargetId"].split("|")
        else:
            resource_id, dimension, namespace = p["ResourceId"], p["ScalableDimension"], p["ServiceNamespace"]
        body = p.get("TargetTrackingScalingPolicyConfiguration") or p.get("StepScalingPolicyConfiguration")
        policy = applicationautoscaling_backends[account_id][region_name].put_scaling_policy(
            policy_name=p["PolicyName"], service_namespace=namespace, resource_id=resource_id,
            scalable_dimension=dimension, policy_body=body, policy_type=p["PolicyType"])
        return cls(policy.policy_arn, {"Arn": policy.policy_arn})


def _patch_rds():
    """ManageMasterUserPassword and its secret's ARN on the stack's DB instance."""
    from moto.rds.models import DBInstance

    original = DBInstance.create_from_cloudformation_json.__func__
    original_has = DBInstance.has_cfn_attr.__func__
    original_get = DBInstance.get_cfn_attribute

    def create(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        props = cloudformation_json["Properties"]
        if props.get("ManageMasterUserPassword") and props.get("MasterUserPassword") is not None:
            raise _refused("RDS refuses MasterUserPassword with ManageMasterUserPassword: RDS "
                             "generates the password it manages")
        if "Port" not in props and str(props.get("Engine", "")).startswith("postgres"):
            props["Port"] = 5432
        group = props.get("DBParameterGroupName")
        if group is not None and not isinstance(group, str):
            props["DBParameterGroupName"] = group.name
        ident = props.get("DBInstanceIdentifier")
        db = original(cls, ident or resource_name, cloudformation_json, account_id, region_name, **kwargs)
        if props.get("ManageMasterUserPassword"):
            db.update(manage_master_user_password=True,
                      master_user_secret_kms_key_id=(props.get("MasterUserSecret") or {}).get("KmsKeyId"))
        return db

    def has(cls, attr):
        return attr == "MasterUserSecret.SecretArn" or original_has(cls, attr)

    def get(self, name):
        if name == "MasterUserSecret.SecretArn":
            return self.master_user_secret.secret_arn
        return original_get(self, name)

    DBInstance.create_from_cloudformation_json = classmethod(create)
    DBInstance.has_cfn_attr = classmethod(has)
    DBInstance.get_cfn_attribute = get


def _patch_cidr():
    """Fn::Cidr, which moto's template parser does not know: `count` blocks of `bits` host bits
    carved in order from the given block, as CloudFormation returns them."""
    import ipaddress

    from moto.cloudformation import parsing

    original = parsing.clean_json

    def clean_json(resource_json, resources_map):
        if isinstance(resource_json, dict) and "Fn::Cidr" in resource_json:
            block, count, bits = (original(v, resources_map) for v in resource_json["Fn::Cidr"])
            net = ipaddress.ip_network(block)
            prefix = net.max_prefixlen - int(bits)
            subnets = list(net.subnets(new_prefix=prefix))
            if int(count) > len(subnets):
                raise _refused(f"Fn::Cidr: {block} holds {len(subnets)} blocks of /{prefix}, not {count}")
            return [str(s) for s in subnets[: int(count)]]
        return original(resource_json, resources_map)

    parsing.clean_json = clean_json

    # The names CloudFormation generates are lowercase where the service wants them so (an
    # ECR repository, an RDS instance, an ElastiCache group); moto lowercases only S3's.
    generate = parsing.generate_resource_name
    lowercase = {"AWS::ECR::Repository": 256, "AWS::RDS::DBInstance": 63, "AWS::ElastiCache::ReplicationGroup": 40,
                 "AWS::ElastiCache::SubnetGroup": 255, "AWS::ElastiCache::ParameterGroup": 255}

    def generate_resource_name(resource_type, stack_name, logical_id):
        name = generate(resource_type, stack_name, logical_id)
        if resource_type in lowercase:
            name = name.lower()[-lowercase[resource_type]:].lstrip("-")
        return name

    parsing.generate_resource_name = generate_resource_name


def _patch_elbv2():
    """LoadBalancerFullName and TargetGroupFullName (the alarms' dimensions), which moto's
    stack resources do not give: the part of the ARN after `loadbalancer/` or from
    `targetgroup/`, as AWS documents them."""
    from moto.elbv2.models import FakeLoadBalancer, FakeTargetGroup

    for model, attr, full in ((FakeLoadBalancer, "LoadBalancerFullName", lambda a: a.split(":loadbalancer/", 1)[1]),
                              (FakeTargetGroup, "TargetGroupFullName", lambda a: a.split(":", 5)[5])):
        original_has = model.has_cfn_attr.__func__
        original_get = getattr(model, "get_cfn_attribute", None)

        def has(cls, name, attr=attr, original_has=original_has):
            return name == attr or original_has(cls, name)

        def get(self, name, attr=attr, full=full, original_get=original_get):
            if name == attr:
                return full(self.arn)
            if original_get is None:
                from moto.cloudformation.exceptions import UnformattedGetAttTemplateException

                raise UnformattedGetAttTemplateException()
            return original_get(self, name)

        model.has_cfn_attr = classmethod(has)
        model.get_cfn_attribute = get


def _patch_conditions():
    """A resource whose Condition is false is not created, and CloudFormation does not list it
    among the stack's resources; moto lists it with no type and no physical id."""
    from moto.cloudformation.models import Stack

    Stack.stack_resources = property(
        lambda self: [r for r in self.resource_map.values() if r is not None])


def install():
    """Called once at the emulator's start, before any stack is parsed (moto caches its map
    of resource types at the first CreateStack)."""
    _patch_rds()
    _patch_cidr()
    _patch_elbv2()
    _patch_conditions()
    assert all(c in CloudFormationModel.__subclasses__() for c in
               (Secret, Certificate, Alarm, CacheParameterGroup, CacheSubnetGroup, CacheReplicationGroup, Schedule,
                ScalableTarget, ScalingPolicy))


__all__ = ["install"]
