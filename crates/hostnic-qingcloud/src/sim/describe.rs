//! The other actions: DescribeJobs, the read-only topology (DescribeVxnets,
//! DescribeInstances, DescribeRouters, DescribeRouterVxnets) and the tags.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::params::{Paging, Params, list, opt, required};
use super::state::{
    ApiError, SimInstance, SimJob, SimNic, SimRouter, SimState, SimTag, SimVxnet, nic_key,
};

impl SimState {
    pub(crate) fn describe_jobs(&self, p: &Params) -> Result<Value, ApiError> {
        let paging = Paging::of(p)?;
        let ids = list(p, "jobs");
        let mut statuses: BTreeSet<String> = list(p, "status").into_iter().collect();
        if let Some(s) = opt(p, "status") {
            statuses.insert(s.to_string());
        }
        let action = opt(p, "job_action");
        let wanted = |j: &&SimJob| {
            (statuses.is_empty() || statuses.contains(j.status.as_str()))
                && action.is_none_or(|a| j.job_action == a)
        };
        let items: Vec<&SimJob> = if ids.is_empty() {
            self.jobs.values().rev().filter(wanted).collect()
        } else {
            let ids: BTreeSet<String> = ids.into_iter().collect();
            ids.iter()
                .rev()
                .filter_map(|id| self.jobs.get(id))
                .filter(wanted)
                .collect()
        };
        Ok(paging.answer("job_set", &items, |j| {
            let resources: Vec<&String> = j.nics.iter().chain(&j.vips).collect();
            json!({
                "job_id": j.job_id,
                "job_action": j.job_action,
                "status": j.status.as_str(),
                "create_time": j.create_time,
                "status_time": j.status_time,
                "resource_ids": resources.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(","),
                "directive": json!({"nics": j.nics, "vips": j.vips, "instance": j.instance_id}).to_string(),
            })
        }))
    }

    pub(crate) fn describe_vxnets(&self, p: &Params) -> Result<Value, ApiError> {
        let paging = Paging::of(p)?;
        let ids: BTreeSet<String> = list(p, "vxnets").into_iter().collect();
        let items: Vec<&SimVxnet> = self
            .vxnets
            .values()
            .filter(|v| ids.is_empty() || ids.contains(&v.vxnet_id))
            .collect();
        Ok(paging.answer("vxnet_set", &items, |v| {
            let (start, end) = v.usable();
            let router = v.router_id.as_ref().map(|r| {
                json!({
                    "router_id": r,
                    "ip_network": v.ip_network.to_string(),
                    "manager_ip": v.gateway().to_string(),
                    "dyn_ip_start": start.to_string(),
                    "dyn_ip_end": end.to_string(),
                })
            });
            json!({
                "vxnet_id": v.vxnet_id,
                "vxnet_name": v.vxnet_id,
                "vxnet_type": 1,
                "vpc_router_id": v.router_id.clone().unwrap_or_default(),
                "router": router,
            })
        }))
    }

    pub(crate) fn describe_instances(&self, p: &Params) -> Result<Value, ApiError> {
        let paging = Paging::of(p)?;
        let ids: BTreeSet<String> = list(p, "instances").into_iter().collect();
        let items: Vec<&SimInstance> = if ids.is_empty() {
            self.instances.values().collect()
        } else {
            ids.iter().filter_map(|id| self.instances.get(id)).collect()
        };
        Ok(paging.answer("instance_set", &items, |i| {
            let mut nics: Vec<&SimNic> = self
                .index
                .nics_of_instance(&i.instance_id)
                .filter_map(|id| self.nics.get(id))
                .collect();
            nics.sort_by_key(|n| (std::cmp::Reverse(n.role), n.sequence));
            let vxnets: Vec<Value> = nics
                .iter()
                .map(|n| {
                    json!({
                        "vxnet_id": n.vxnet_id,
                        "vxnet_name": n.vxnet_id,
                        "vxnet_type": 1,
                        "nic_id": n.nic_id,
                        "private_ip": n.ip().map(|ip| ip.to_string()).unwrap_or_default(),
                        "role": n.role,
                    })
                })
                .collect();
            json!({
                "instance_id": i.instance_id,
                "instance_name": i.instance_id,
                "status": "running",
                "vxnets": vxnets,
            })
        }))
    }

    pub(crate) fn describe_routers(&self, p: &Params) -> Result<Value, ApiError> {
        let paging = Paging::of(p)?;
        let ids: BTreeSet<String> = list(p, "routers").into_iter().collect();
        let items: Vec<&SimRouter> = self
            .routers
            .values()
            .filter(|r| ids.is_empty() || ids.contains(&r.router_id))
            .collect();
        Ok(paging.answer("router_set", &items, |r| {
            json!({
                "router_id": r.router_id,
                "router_name": r.router_id,
                "status": "active",
                "vpc_network": r.vpc_network.to_string(),
            })
        }))
    }

    pub(crate) fn describe_router_vxnets(&self, p: &Params) -> Result<Value, ApiError> {
        let paging = Paging::of(p)?;
        let router = required(p, "router")?;
        if !self.routers.contains_key(router) {
            return Err(ApiError::not_found("router", router));
        }
        let items: Vec<&SimVxnet> = self
            .vxnets
            .values()
            .filter(|v| v.router_id.as_deref() == Some(router))
            .collect();
        Ok(paging.answer("router_vxnet_set", &items, |v| {
            json!({
                "router_id": router,
                "vxnet_id": v.vxnet_id,
                "ip_network": v.ip_network.to_string(),
                "manager_ip": v.gateway().to_string(),
            })
        }))
    }

    pub(crate) fn create_tag(&mut self, p: &Params) -> Result<Value, ApiError> {
        let name = opt(p, "tag_name").unwrap_or_default().to_string();
        let tag_id = format!("tag-sim{:05}", self.tags.len() + 1);
        self.tags.insert(
            tag_id.clone(),
            SimTag {
                tag_id: tag_id.clone(),
                tag_name: name,
            },
        );
        Ok(json!({ "tag_id": tag_id }))
    }

    pub(crate) fn describe_tags(&self, p: &Params) -> Result<Value, ApiError> {
        let paging = Paging::of(p)?;
        let ids: BTreeSet<String> = list(p, "tags").into_iter().collect();
        let word = opt(p, "search_word");
        let items: Vec<&SimTag> = self
            .tags
            .values()
            .filter(|t| ids.is_empty() || ids.contains(&t.tag_id))
            .filter(|t| word.is_none_or(|w| t.tag_name.contains(w) || t.tag_id == w))
            .collect();
        Ok(paging.answer("tag_set", &items, |t| {
            let count = self
                .nics
                .values()
                .filter(|n| n.tags.contains(&t.tag_id))
                .count();
            json!({"tag_id": t.tag_id, "tag_name": t.tag_name, "resource_count": count})
        }))
    }

    pub(crate) fn attach_tags(&mut self, p: &Params) -> Result<Value, ApiError> {
        let mut pairs = Vec::new();
        for n in 1.. {
            let key = |field: &str| format!("resource_tag_pairs.{n}.{field}");
            let Some(tag) = opt(p, &key("tag_id")) else {
                break;
            };
            let kind = opt(p, &key("resource_type"))
                .ok_or_else(|| ApiError::missing(&key("resource_type")))?;
            let id = opt(p, &key("resource_id"))
                .ok_or_else(|| ApiError::missing(&key("resource_id")))?;
            if !self.tags.contains_key(tag) {
                return Err(ApiError::not_found("tag", tag));
            }
            if kind != "nic" {
                return Err(ApiError::invalid(
                    &key("resource_type"),
                    "is not supported by the simulator",
                ));
            }
            let nic = nic_key(id);
            if !self.nics.contains_key(&nic) {
                return Err(ApiError::not_found("nic", id));
            }
            pairs.push((tag.to_string(), nic));
        }
        if pairs.is_empty() {
            return Err(ApiError::missing("resource_tag_pairs.1.tag_id"));
        }
        for (tag, nic) in pairs {
            if let Some(n) = self.nics.get_mut(&nic) {
                n.tags.insert(tag);
            }
        }
        Ok(json!({}))
    }
}
