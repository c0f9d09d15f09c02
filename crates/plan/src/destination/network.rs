//! The network: the team's VPC and subnets when given (the one Ferry's stack uses), or a new
//! VPC across two Availability Zones — public subnets for the load balancer, private ones with
//! a NAT gateway for the tasks, RDS and ElastiCache — whose NAT address is an output, for
//! Heroku Private Spaces' trusted IP ranges.

use serde_json::{Value, json};

use super::{Template, att, r, skips};

/// The VPC in use.
pub(super) fn vpc() -> Value {
    json!({"Fn::If": ["NewVpc", r("Vpc"), r("VpcId")]})
}

/// The private subnets in use.
pub(super) fn private_subnets() -> Value {
    json!({"Fn::If": ["NewVpc", [r("PrivateSubnetA"), r("PrivateSubnetB")], r("PrivateSubnetIds")]})
}

/// The public subnets in use.
pub(super) fn public_subnets() -> Value {
    json!({"Fn::If": ["NewVpc", [r("PublicSubnetA"), r("PublicSubnetB")], r("PublicSubnetIds")]})
}

pub(super) fn network(t: &mut Template) {
    t.parameter(
        "VpcId",
        json!({"Type": "String", "Default": "", "AllowedPattern": "^(vpc-[0-9a-f]{8,17})?$", "Description": "The VPC the app runs in (the one Ferry's stack uses), with the two subnet lists. Empty creates a VPC."}),
    );
    t.parameter(
        "PrivateSubnetIds",
        json!({"Type": "CommaDelimitedList", "Default": "", "Description": "With VpcId: private subnets with a NAT route out, in two or more Availability Zones (the app's tasks, RDS, ElastiCache)."}),
    );
    t.parameter(
        "PublicSubnetIds",
        json!({"Type": "CommaDelimitedList", "Default": "", "Description": "With VpcId: public subnets in two or more Availability Zones (the load balancer)."}),
    );
    t.parameter(
        "VpcCidr",
        json!({"Type": "String", "Default": "10.80.0.0/16", "AllowedPattern": "^(\\d{1,3}\\.){3}\\d{1,3}/(1[6-9]|2[0-4])$", "Description": "Without VpcId: the new VPC's address range (four /20s are cut from a /16)."}),
    );
    t.condition("NewVpc", json!({"Fn::Equals": [r("VpcId"), ""]}));
    t.resource(
        "Vpc",
        json!({
            "Type": "AWS::EC2::VPC",
            "Condition": "NewVpc",
            "Metadata": skips(&[("CKV2_AWS_11", "Flow logs cost per GB; the team turns them on where it audits traffic."), ("CKV2_AWS_12", "The default security group is unused: every resource here has its own.")]),
            "Properties": {"CidrBlock": r("VpcCidr"), "EnableDnsHostnames": true, "EnableDnsSupport": true},
        }),
    );
    t.resource(
        "InternetGateway",
        json!({"Type": "AWS::EC2::InternetGateway", "Condition": "NewVpc"}),
    );
    t.resource(
        "InternetGatewayAttachment",
        json!({"Type": "AWS::EC2::VPCGatewayAttachment", "Condition": "NewVpc", "Properties": {"VpcId": r("Vpc"), "InternetGatewayId": r("InternetGateway")}}),
    );
    subnets(t);
    routes(t);
    t.output(
        "NatPublicIp",
        "The address the app and Ferry reach Heroku from: add it to a Private Space's trusted IP ranges",
        json!({"Fn::If": ["NewVpc", r("NatAddress"), "the NAT gateway of the VPC you gave"]}),
    );
    t.output(
        "VpcIdOut",
        "The VPC in use (Ferry's stack runs in it)",
        vpc(),
    );
    t.output(
        "PrivateSubnetIdsOut",
        "The private subnets in use (Ferry's WorkerSubnets)",
        json!({"Fn::Join": [",", private_subnets()]}),
    );
}

fn subnets(t: &mut Template) {
    for (i, (name, public)) in [
        ("PublicSubnetA", true),
        ("PublicSubnetB", true),
        ("PrivateSubnetA", false),
        ("PrivateSubnetB", false),
    ]
    .into_iter()
    .enumerate()
    {
        let mut subnet = json!({
            "Type": "AWS::EC2::Subnet",
            "Condition": "NewVpc",
            "Properties": {
                "VpcId": r("Vpc"),
                "AvailabilityZone": {"Fn::Select": [i % 2, {"Fn::GetAZs": ""}]},
                "CidrBlock": {"Fn::Select": [i, {"Fn::Cidr": [r("VpcCidr"), 4, 12]}]},
                "MapPublicIpOnLaunch": false,
            },
        });
        if public {
            subnet["Metadata"] = skips(&[(
                "CKV_AWS_130",
                "Public subnets hold only the load balancer and the NAT gateway.",
            )]);
        }
        t.resource(name, subnet);
    }
}

fn routes(t: &mut Template) {
    t.resource(
        "NatAddress",
        json!({"Type": "AWS::EC2::EIP", "Condition": "NewVpc", "DependsOn": "InternetGatewayAttachment", "Properties": {"Domain": "vpc"}}),
    );
    t.resource(
        "NatGateway",
        json!({"Type": "AWS::EC2::NatGateway", "Condition": "NewVpc", "Properties": {"AllocationId": att("NatAddress", "AllocationId"), "SubnetId": r("PublicSubnetA")}}),
    );
    for (table, target, subnets) in [
        (
            "PublicRoutes",
            json!({"GatewayId": r("InternetGateway")}),
            ["PublicSubnetA", "PublicSubnetB"],
        ),
        (
            "PrivateRoutes",
            json!({"NatGatewayId": r("NatGateway")}),
            ["PrivateSubnetA", "PrivateSubnetB"],
        ),
    ] {
        t.resource(
            table,
            json!({"Type": "AWS::EC2::RouteTable", "Condition": "NewVpc", "Properties": {"VpcId": r("Vpc")}}),
        );
        let mut route = json!({"RouteTableId": r(table), "DestinationCidrBlock": "0.0.0.0/0"});
        if let (Some(route), Some(target)) = (route.as_object_mut(), target.as_object()) {
            route.extend(target.clone());
        }
        t.resource(
            &format!("{table}Default"),
            json!({"Type": "AWS::EC2::Route", "Condition": "NewVpc", "DependsOn": "InternetGatewayAttachment", "Properties": route}),
        );
        for subnet in subnets {
            t.resource(
                &format!("{subnet}Routes"),
                json!({"Type": "AWS::EC2::SubnetRouteTableAssociation", "Condition": "NewVpc", "Properties": {"RouteTableId": r(table), "SubnetId": r(subnet)}}),
            );
        }
    }
}
