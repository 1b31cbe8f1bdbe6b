//! The NIC actions: DescribeNics, CreateNics, AttachNics, DetachNics, DeleteNics.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::params::{Paging, Params, addr, flag, int_in, list, opt, required};
use super::state::{ApiError, Effects, NicStatus, SimNic, SimState, nic_key};
use crate::errors::ACCESS_DENIED;

/// `CreateNics` makes 1 to 252 NICs per call.
pub const MAX_CREATE: u64 = 252;

impl SimState {
    pub(crate) fn nic_json(&self, n: &SimNic) -> Value {
        let tags: Vec<Value> = n
            .tags
            .iter()
            .filter_map(|t| self.tags.get(t))
            .map(|t| json!({"tag_id": t.tag_id, "tag_name": t.tag_name}))
            .collect();
        json!({
            "nic_id": n.nic_id,
            "nic_name": n.nic_name,
            "vxnet_id": n.vxnet_id,
            "private_ip": n.ip().map(|ip| ip.to_string()).unwrap_or_default(),
            "instance_id": n.instance_id.clone().unwrap_or_default(),
            "status": n.status.as_str(),
            "role": n.role,
            "sequence": n.sequence,
            "create_time": n.create_time,
            "tags": tags,
        })
    }

    pub(crate) fn describe_nics(&self, p: &Params) -> Result<Value, ApiError> {
        let paging = Paging::of(p)?;
        let ids: BTreeSet<String> = list(p, "nics").iter().map(|s| nic_key(s)).collect();
        let vxnets: BTreeSet<String> = list(p, "vxnets").into_iter().collect();
        let instances: BTreeSet<String> = list(p, "instances").into_iter().collect();
        let name = opt(p, "nic_name");
        let status = opt(p, "status");
        // Start from the narrowest index, then apply every filter.
        let candidates: Vec<&SimNic> = if !ids.is_empty() {
            ids.iter().filter_map(|id| self.nics.get(id)).collect()
        } else {
            let from_index: Option<BTreeSet<&String>> = if !instances.is_empty() {
                Some(
                    instances
                        .iter()
                        .flat_map(|i| self.index.nics_of_instance(i))
                        .collect(),
                )
            } else if let Some(name) = name {
                Some(self.index.nics_named(name).collect())
            } else if !vxnets.is_empty() {
                Some(
                    vxnets
                        .iter()
                        .flat_map(|v| self.index.nics_in_vxnet(v))
                        .collect(),
                )
            } else {
                None
            };
            match from_index {
                Some(set) => set.into_iter().filter_map(|id| self.nics.get(id)).collect(),
                None => self.nics.values().collect(),
            }
        };
        let items: Vec<&SimNic> = candidates
            .into_iter()
            .filter(|n| vxnets.is_empty() || vxnets.contains(&n.vxnet_id))
            .filter(|n| {
                instances.is_empty()
                    || n.instance_id
                        .as_ref()
                        .is_some_and(|i| instances.contains(i))
            })
            .filter(|n| name.is_none_or(|want| n.nic_name == want))
            .filter(|n| status.is_none_or(|want| n.status.as_str() == want))
            .collect();
        Ok(paging.answer("nic_set", &items, |n| self.nic_json(n)))
    }

    pub(crate) fn create_nics(&mut self, p: &Params) -> Result<Value, ApiError> {
        let vxnet = required(p, "vxnet")?.to_string();
        let vx = self.vxnet(&vxnet)?.clone();
        let name = opt(p, "nic_name").unwrap_or_default().to_string();
        let disable_ip = flag(p, "disable_ip")?;
        let wanted = list(p, "private_ips");
        let count = if wanted.is_empty() {
            int_in(p, "count", 1, 1, MAX_CREATE)? as usize
        } else {
            if disable_ip {
                return Err(ApiError::invalid(
                    "private_ips",
                    "cannot be given together with [disable_ip]",
                ));
            }
            if wanted.len() as u64 > MAX_CREATE {
                return Err(ApiError::invalid(
                    "private_ips",
                    &format!("can name at most {MAX_CREATE} addresses"),
                ));
            }
            if opt(p, "count").is_some()
                && int_in(p, "count", 1, 1, MAX_CREATE)? as usize != wanted.len()
            {
                return Err(ApiError::invalid(
                    "count",
                    "should equal the number of [private_ips]",
                ));
            }
            wanted.len()
        };
        let existing = self.index.nic_count_in_vxnet(&vxnet);
        if existing + count > self.max_nics_per_vxnet {
            return Err(ApiError::resource_quota(format!(
                "QuotaExceeded, vxnet [{vxnet}] can hold at most [{}] NICs, it has [{existing}] and [{count}] more were requested",
                self.max_nics_per_vxnet
            )));
        }
        let ips: Vec<Option<Ipv4Addr>> = if disable_ip {
            vec![None; count]
        } else if wanted.is_empty() {
            self.free_ips(&vxnet, count)?
                .into_iter()
                .map(Some)
                .collect()
        } else {
            let mut seen = BTreeSet::new();
            let mut ips = Vec::with_capacity(wanted.len());
            for (i, s) in wanted.iter().enumerate() {
                let key = format!("private_ips.{}", i + 1);
                let ip = addr(&key, s)?;
                if !vx.is_usable(ip) {
                    let (first, last) = vx.usable();
                    return Err(ApiError::invalid(
                        &key,
                        &format!(
                            "[{ip}] is not a usable address of vxnet [{vxnet}] ({first} to {last})"
                        ),
                    ));
                }
                if !seen.insert(ip) {
                    return Err(ApiError::invalid(&key, &format!("[{ip}] is given twice")));
                }
                if let Some(holder) = self.holder(&vxnet, ip) {
                    return Err(ApiError::new(
                        ACCESS_DENIED,
                        format!(
                            "PermissionDenied, address [{ip}] of vxnet [{vxnet}] is in use by {holder}"
                        ),
                    ));
                }
                ips.push(Some(ip));
            }
            ips
        };
        let mut out = Vec::with_capacity(ips.len());
        for ip in ips {
            let nic = self.new_nic(&vxnet, ip, &name);
            out.push(json!({
                "nic_id": nic.nic_id,
                "private_ip": ip.map(|ip| ip.to_string()).unwrap_or_default(),
            }));
            self.insert_nic(nic);
        }
        Ok(json!({ "nics": out }))
    }

    /// The NICs named in `nics.N`, all of which must exist.
    fn named_nics(&self, p: &Params) -> Result<Vec<String>, ApiError> {
        let ids = list(p, "nics");
        if ids.is_empty() {
            return Err(ApiError::missing("nics"));
        }
        let mut keys = Vec::new();
        let mut seen = BTreeSet::new();
        for id in ids {
            let key = nic_key(&id);
            if !self.nics.contains_key(&key) {
                return Err(ApiError::not_found("nic", &id));
            }
            if seen.insert(key.clone()) {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    fn check_not_busy(nic: &SimNic, action: &str) -> Result<(), ApiError> {
        match &nic.busy_job {
            Some(job) => Err(ApiError::new(
                ACCESS_DENIED,
                format!(
                    "PermissionDenied, nic [{}] is being processed by job [{job}], cannot perform [{action}]",
                    nic.nic_id
                ),
            )),
            None => Ok(()),
        }
    }

    pub(crate) fn attach_nics(&mut self, p: &Params) -> Result<(Value, Effects), ApiError> {
        const ACTION: &str = "AttachNics";
        let nics = self.named_nics(p)?;
        let instance = required(p, "instance")?.to_string();
        if !self.instances.contains_key(&instance) {
            return Err(ApiError::not_found("instance", &instance));
        }
        for key in &nics {
            let nic = &self.nics[key];
            if nic.status != NicStatus::Available {
                return Err(ApiError::wrong_state(
                    "nic",
                    key,
                    nic.status.as_str(),
                    ACTION,
                ));
            }
            Self::check_not_busy(nic, ACTION)?;
        }
        let attached_or_coming =
            self.index.nic_count_of_instance(&instance) + self.index.attaching(&instance);
        if attached_or_coming + nics.len() > self.max_nics_per_instance {
            return Err(ApiError::resource_quota(format!(
                "QuotaExceeded, instance [{instance}] can have at most [{}] NICs, it has [{attached_or_coming}] and [{}] more were requested",
                self.max_nics_per_instance,
                nics.len()
            )));
        }
        let job = self.new_job(ACTION, nics, Vec::new(), Some(instance));
        Ok((json!({ "job_id": job }), Effects::job(job)))
    }

    pub(crate) fn detach_nics(&mut self, p: &Params) -> Result<(Value, Effects), ApiError> {
        const ACTION: &str = "DetachNics";
        let nics = self.named_nics(p)?;
        let mut instance = None;
        for key in &nics {
            let nic = &self.nics[key];
            if nic.status != NicStatus::InUse {
                return Err(ApiError::wrong_state(
                    "nic",
                    key,
                    nic.status.as_str(),
                    ACTION,
                ));
            }
            if nic.role == 1 {
                return Err(ApiError::new(
                    ACCESS_DENIED,
                    format!(
                        "PermissionDenied, nic [{key}] is the primary NIC of instance [{}], cannot perform [{ACTION}]",
                        nic.instance_id.clone().unwrap_or_default()
                    ),
                ));
            }
            Self::check_not_busy(nic, ACTION)?;
            instance = instance.or(nic.instance_id.clone());
        }
        let job = self.new_job(ACTION, nics, Vec::new(), instance);
        Ok((json!({ "job_id": job }), Effects::job(job)))
    }

    pub(crate) fn delete_nics(&mut self, p: &Params) -> Result<Value, ApiError> {
        const ACTION: &str = "DeleteNics";
        let nics = self.named_nics(p)?;
        for key in &nics {
            let nic = &self.nics[key];
            if nic.status != NicStatus::Available || nic.role == 1 {
                return Err(ApiError::wrong_state(
                    "nic",
                    key,
                    nic.status.as_str(),
                    ACTION,
                ));
            }
            Self::check_not_busy(nic, ACTION)?;
        }
        for key in &nics {
            self.remove_nic(key);
        }
        Ok(json!({ "nics": nics }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::topology::Topology;
    use super::*;
    use crate::errors::MALFORMED_REQUEST;

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn state() -> SimState {
        SimState::new(&Topology::default())
    }

    fn create(s: &mut SimState, pairs: &[(&str, &str)]) -> Result<Vec<Value>, ApiError> {
        s.dispatch("CreateNics", &params(pairs))
            .map(|(v, _)| v["nics"].as_array().unwrap().clone())
    }

    #[test]
    fn default_topology_has_three_instances_with_primary_nics() {
        let s = state();
        assert_eq!(s.instances.len(), 3);
        let primaries: Vec<_> = s.nics.values().filter(|n| n.role == 1).collect();
        assert_eq!(primaries.len(), 3);
        assert!(
            primaries
                .iter()
                .all(|n| n.vxnet_id == "vxnet-sim1" && n.nic_id.starts_with("52:54:"))
        );
        assert_eq!(primaries[0].private_ip, Ipv4Addr::new(172, 16, 1, 2));
    }

    #[test]
    fn a_vxnet_has_252_usable_addresses_then_a_resource_quota_2500() {
        let mut s = state();
        // .2 to .253 of vxnet-sim2.
        assert_eq!(
            create(&mut s, &[("vxnet", "vxnet-sim2"), ("count", "252")])
                .unwrap()
                .len(),
            252
        );
        let err = create(&mut s, &[("vxnet", "vxnet-sim2")]).unwrap_err();
        assert_eq!(err.code, 2500);
        assert!(
            !crate::errors::is_request_quota_message(&err.message),
            "{}",
            err.message
        );
    }

    #[test]
    fn count_is_1_to_252_and_anything_else_is_1100() {
        let mut s = state();
        for bad in ["0", "253", "-1", "many"] {
            let err = create(&mut s, &[("vxnet", "vxnet-sim2"), ("count", bad)]).unwrap_err();
            assert_eq!(err.code, 1100, "count={bad}: {}", err.message);
        }
        assert!(s.nics.len() == 3, "nothing was created");
    }

    #[test]
    fn disable_ip_makes_nics_without_an_address_that_hold_none() {
        let mut s = state();
        let nics = create(
            &mut s,
            &[("vxnet", "vxnet-sim2"), ("count", "3"), ("disable_ip", "1")],
        )
        .unwrap();
        assert_eq!(nics.len(), 3);
        assert!(nics.iter().all(|n| n["private_ip"] == ""));
        // No address was used: all 252 are still there.
        assert_eq!(
            create(&mut s, &[("vxnet", "vxnet-sim2"), ("count", "249")])
                .unwrap()
                .len(),
            249
        );
        let listed = s
            .dispatch(
                "DescribeNics",
                &params(&[("nics.1", nics[0]["nic_id"].as_str().unwrap())]),
            )
            .unwrap()
            .0;
        assert_eq!(listed["nic_set"][0]["private_ip"], "");
        assert_eq!(
            create(&mut s, &[("vxnet", "vxnet-sim2"), ("disable_ip", "yes")])
                .unwrap_err()
                .code,
            1100
        );
    }

    #[test]
    fn a_vxnet_holds_at_most_252_nics_even_without_addresses() {
        let mut s = state();
        create(
            &mut s,
            &[
                ("vxnet", "vxnet-sim2"),
                ("count", "200"),
                ("disable_ip", "1"),
            ],
        )
        .unwrap();
        let err = create(
            &mut s,
            &[
                ("vxnet", "vxnet-sim2"),
                ("count", "53"),
                ("disable_ip", "1"),
            ],
        )
        .unwrap_err();
        assert_eq!(err.code, 2500);
        assert!(
            err.message.contains("at most [252] NICs"),
            "{}",
            err.message
        );
        create(
            &mut s,
            &[
                ("vxnet", "vxnet-sim2"),
                ("count", "52"),
                ("disable_ip", "1"),
            ],
        )
        .unwrap();
    }

    #[test]
    fn private_ips_are_given_exactly_or_answer_the_real_errors() {
        let mut s = state();
        let nics = create(
            &mut s,
            &[
                ("vxnet", "vxnet-sim2"),
                ("private_ips.1", "172.16.2.50"),
                ("private_ips.2", "172.16.2.51"),
            ],
        )
        .unwrap();
        let ips: Vec<&str> = nics
            .iter()
            .map(|n| n["private_ip"].as_str().unwrap())
            .collect();
        assert_eq!(ips, ["172.16.2.50", "172.16.2.51"]);
        // Taken: 1400; outside the usable range, twice, or not an address: 1100.
        let taken = create(
            &mut s,
            &[("vxnet", "vxnet-sim2"), ("private_ips.1", "172.16.2.50")],
        )
        .unwrap_err();
        assert_eq!(taken.code, 1400, "{}", taken.message);
        for (ip, why) in [
            ("172.16.3.9", "another vxnet"),
            ("172.16.2.1", "the gateway"),
            ("172.16.2.255", "broadcast"),
            ("172.16.2.300", "not an address"),
        ] {
            let err =
                create(&mut s, &[("vxnet", "vxnet-sim2"), ("private_ips.1", ip)]).unwrap_err();
            assert_eq!(err.code, 1100, "{why}: {}", err.message);
        }
        let twice = create(
            &mut s,
            &[
                ("vxnet", "vxnet-sim2"),
                ("private_ips.1", "172.16.2.60"),
                ("private_ips.2", "172.16.2.60"),
            ],
        )
        .unwrap_err();
        assert_eq!(twice.code, 1100);
        let with_disable = create(
            &mut s,
            &[
                ("vxnet", "vxnet-sim2"),
                ("private_ips.1", "172.16.2.61"),
                ("disable_ip", "1"),
            ],
        )
        .unwrap_err();
        assert_eq!(with_disable.code, 1100);
        // Automatic allocation skips the taken addresses.
        let next = create(&mut s, &[("vxnet", "vxnet-sim2"), ("count", "49")]).unwrap();
        assert!(
            next.iter()
                .all(|n| n["private_ip"] != "172.16.2.50" && n["private_ip"] != "172.16.2.51")
        );
    }

    fn attach(s: &mut SimState, instance: &str, nics: &[String]) -> Result<String, ApiError> {
        let mut p = params(&[("instance", instance)]);
        for (i, n) in nics.iter().enumerate() {
            p.insert(format!("nics.{}", i + 1), n.clone());
        }
        s.dispatch("AttachNics", &p)
            .map(|(v, _)| v["job_id"].as_str().unwrap().to_string())
    }

    fn run(s: &mut SimState, job: &str) {
        s.start_job(job);
        let (ok, _) = s.apply_job(job);
        s.finish_job(job, ok);
    }

    #[test]
    fn an_instance_takes_64_nics_primary_included_counting_attach_jobs_in_flight() {
        let mut s = state();
        assert_eq!(s.max_nics_per_instance, 64);
        let ids: Vec<String> = create(&mut s, &[("vxnet", "vxnet-sim2"), ("count", "64")])
            .unwrap()
            .iter()
            .map(|n| n["nic_id"].as_str().unwrap().to_string())
            .collect();
        // 40 attached, 23 on their way: the primary makes 64.
        let j1 = attach(&mut s, "i-sim00001", &ids[..40]).unwrap();
        run(&mut s, &j1);
        let _in_flight = attach(&mut s, "i-sim00001", &ids[40..63]).unwrap();
        let err = attach(&mut s, "i-sim00001", &ids[63..]).unwrap_err();
        assert_eq!(err.code, 2500);
        assert!(err.message.contains("at most [64] NICs"), "{}", err.message);
        assert!(!crate::errors::is_request_quota_message(&err.message));
        // Another instance takes it.
        attach(&mut s, "i-sim00002", &ids[63..]).unwrap();
    }

    #[test]
    fn wrong_state_missing_and_unknown_give_their_codes() {
        let mut s = state();
        let primary = s.instances["i-sim00001"].primary_nic.clone();
        assert_eq!(
            s.dispatch("DeleteNics", &params(&[("nics.1", &primary)]))
                .unwrap_err()
                .code,
            1400
        );
        assert_eq!(
            s.dispatch("CreateNics", &params(&[])).unwrap_err().code,
            MALFORMED_REQUEST
        );
        assert_eq!(
            s.dispatch("DeleteNics", &params(&[("nics.1", "52:54:00:00:00:99")]))
                .unwrap_err()
                .code,
            2100
        );
        assert_eq!(s.dispatch("Nope", &params(&[])).unwrap_err().code, 1101);
    }

    #[test]
    fn the_indexes_follow_attach_detach_delete_and_vanish() {
        let mut s = state();
        let ids: Vec<String> = create(
            &mut s,
            &[("vxnet", "vxnet-sim2"), ("count", "3"), ("nic_name", "n")],
        )
        .unwrap()
        .iter()
        .map(|n| n["nic_id"].as_str().unwrap().to_string())
        .collect();
        let j = attach(&mut s, "i-sim00002", &ids).unwrap();
        run(&mut s, &j);
        let of = |s: &SimState, p: &[(&str, &str)]| {
            s.dispatch_ro("DescribeNics", p)["total_count"]
                .as_u64()
                .unwrap()
        };
        assert_eq!(of(&s, &[("instances.1", "i-sim00002")]), 4);
        assert_eq!(of(&s, &[("nic_name", "n")]), 3);
        assert_eq!(of(&s, &[("vxnets.1", "vxnet-sim2")]), 3);
        assert_eq!(of(&s, &[("nic_name", "n"), ("status", "in-use")]), 3);
        s.vanish_nic(&ids[0]).unwrap();
        let mut p = params(&[("nics.1", &ids[1])]);
        let (v, _) = s.dispatch("DetachNics", &p).unwrap();
        run(&mut s, v["job_id"].as_str().unwrap());
        assert_eq!(of(&s, &[("instances.1", "i-sim00002")]), 2);
        p.insert("nics.1".into(), ids[1].clone());
        s.dispatch("DeleteNics", &p).unwrap();
        assert_eq!(of(&s, &[("nic_name", "n")]), 1);
        assert_eq!(of(&s, &[("vxnets.1", "vxnet-sim2")]), 1);
        // The deleted and vanished NICs' addresses are free again (lowest first).
        let again = create(&mut s, &[("vxnet", "vxnet-sim2"), ("count", "2")]).unwrap();
        assert_eq!(again[0]["private_ip"], "172.16.2.2");
        assert_eq!(again[1]["private_ip"], "172.16.2.3");
    }

    impl SimState {
        fn dispatch_ro(&self, action: &str, p: &[(&str, &str)]) -> Value {
            self.clone().dispatch(action, &params(p)).unwrap().0
        }
    }
}
